"""The FastAPI application: synthesis, cleanup, memory, memory snapshots and ``/metrics``.

Every error is JSON ``{"error": message, "field": name-or-null}``: 4xx for what the client can
fix (400 unreadable body, 401 token, 409 no CUDA snapshot here, 413 too large, 415 media type,
422 invalid field, 429 too many waiting), 503 for what it cannot (out of memory even after a
cleanup and a retry, a model that cannot load). Bad input never gives a 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from glmtts.audio import wav_bytes
from glmtts.cancel import Cancelled
from glmtts.errors import GlmTtsError, InvalidRequestError, OutOfMemoryError
from glmtts.outcome import SynthesisOutcome
from glmtts.reference_audio import ReferenceAudioError
from glmtts.registry import loaded_models
from glmtts.request import SynthesisRequest
from glmtts.stream import Listener
from monitoring.allocator_history import MEDIA_TYPE as SNAPSHOT_MEDIA_TYPE
from monitoring.allocator_history import snapshot_filename
from monitoring.errors import SnapshotUnavailableError
from monitoring.i18n import speaking
from service import schemas
from service.admission import AdmissionRefusedError
from service.errors import BusyError
from service.middleware import BodyLimit, BodyStalledError, BodyTooLargeError
from service.routing import get_and_head
from service.runtime import Service, new_synthesis_id
from service.voices import gate_reference

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
_INTEGER_FIELDS = ("seed", "sample_rate")
_FIGURE_HEADERS = {"torch_allocated": "Torch-Allocated", "torch_reserved": "Torch-Reserved",
                   "nvml_process": "NVML-Process", "host_rss": "Host-RSS"}


class ApiError(Exception):
    """An answer other than 2xx, with the JSON error body."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


def _error(status: int, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {400: "The body cannot be read (not JSON, bad multipart)",
             401: "The token is missing or wrong",
             409: "Not possible in this process (e.g. no CUDA)",
             413: "The body or upload is larger than the limit, or the request's predicted "
                  "memory peak exceeds the memory budget even alone",
             415: "The body's media type is not accepted",
             422: "A field is invalid (the message says why, as the page would)",
             429: "Too many syntheses are waiting for the device; retry later",
             503: "Out of memory even after a full cleanup and a retry, or the model cannot "
                  "load"}
    return {code: {"model": schemas.ErrorBody, "description": texts[code]} for code in codes}


# ----------------------------------------------------------------------------- validation
def _pydantic_message(err: dict[str, Any]) -> tuple[str, str | None]:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = loc[0] if loc else None
    kind = err.get("type", "")
    value = err.get("input")
    if kind == "extra_forbidden":
        if field == "voice":
            return ("the voice is chosen when the service starts (serve --voice): one service "
                    "holds one model", field)
        return (f"unknown field {field!r}; the fields are: "
                f"{', '.join(schemas.REQUEST_FIELDS)}", field)
    if kind == "missing":
        return f"the field {field!r} is required", field
    if kind.startswith(("int_", "int_parsing")):
        return f"{field} must be a whole number, not {value!r}", field
    if kind.startswith(("float_", "float_parsing")):
        return f"{field} must be a number, not {value!r}", field
    if kind.startswith("bool"):
        return f"{field} must be true or false, not {value!r}", field
    if kind.startswith("string"):
        return f"{field} must be a string, not {type(value).__name__}", field
    return f"{field}: {err.get('msg', 'invalid value')}", field


def _fields_from(data: dict[str, Any], *, strict: bool) -> schemas.SynthesisFields:
    # JSON has one number type: 5.0 is the integer 5 (as JSON Schema's "integer" says).
    data = {k: int(v) if k in _INTEGER_FIELDS and isinstance(v, float) and v.is_integer()
            else v for k, v in data.items()}
    try:
        return schemas.SynthesisFields.model_validate(data, strict=strict)
    except ValidationError as exc:
        message, field = _pydantic_message(exc.errors()[0])
        raise ApiError(422, message, field) from None


def _check_lengths(fields: schemas.SynthesisFields, max_chars: int) -> None:
    for name in ("text", "reference_text"):
        value = getattr(fields, name)
        if value is not None and len(value) > max_chars:
            what = "text" if name == "text" else "reference transcript"
            raise ApiError(422, f"the {what} has {len(value):,} characters; the limit is "
                                f"{max_chars:,} per request: split it or use batch synthesis",
                           name)


def _notes_for(service: Service, given: set[str]) -> list[str]:
    caps = service.session.engine.capabilities
    notes = []
    for knob in ("reference_audio", "reference_text", "use_kv_cache", "sampling_method"):
        reason = caps.reason("reference_audio" if knob == "reference_text" else knob)
        if knob in given and reason is not None:
            notes.append(f"{knob} is ignored by the {service.session.engine_name} engine: "
                         f"{reason}")
    return notes


#: Deepest nesting of arrays and objects a JSON body may have (a request is flat).
MAX_JSON_DEPTH = 32
#: Longest number literal accepted in a JSON body, in characters.
MAX_NUMBER_CHARS = 40
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_NESTING = re.compile(rb"[\[\]{}]")


def _bounded_number(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text):,} digits (at most {MAX_NUMBER_CHARS})")
    return int(text)


def parse_json_body(body: bytes) -> Any:
    """A JSON body, with its nesting depth and number lengths bounded before they can cost
    the server (deep nesting would exhaust Python's stack, a 5,000-digit number its int
    parser); every problem is a 400 naming it, never a 500.

    Raises:
        ApiError: 400, not JSON or over the bounds; 422, field names that are not text.
    """
    depth = deepest = 0
    for match in _JSON_NESTING.finditer(_JSON_STRING.sub(b'""', body)):
        depth += 1 if match.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise ApiError(400, f"the body is not valid JSON for this service: it nests "
                                f"deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body, parse_int=_bounded_number)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        for key in data:
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(422, "a field name is not valid text (it holds a lone "
                                    "surrogate, \\ud800-\\udfff)") from None
    return data


async def _watch_disconnect(request: Request, cancel: threading.Event,
                            every_s: float = 0.25) -> None:
    """Set ``cancel`` when the client of ``request`` disconnects (polled while it waits)."""
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(every_s)


def _read_audio_upload(upload: UploadFile, folder: Path) -> Path:
    """Keep the upload in ``folder`` and pass it through the one reference-audio gate
    (:func:`service.voices.gate_reference`: format, size, channels, rate and duration from
    the header; nothing is decoded here, and an engine that ignores reference audio never
    decodes it). Returns its path."""
    data = upload.file.read()
    if not data:
        raise ApiError(422, "the reference audio is empty", "reference_audio")
    try:
        return gate_reference(data, folder)[0]
    except ReferenceAudioError as exc:
        raise ApiError(422, f"the reference audio cannot be used: {exc}",
                       "reference_audio") from None


async def run_synthesis(service: Service, request: Request, synthesis: SynthesisRequest,
                        synthesis_id: str, encode: Callable[[Any, int], bytes] = wav_bytes, *,
                        cancel: threading.Event | None = None,
                        on_audio: Listener | None = None) -> tuple[SynthesisOutcome, bytes]:
    """The one way an HTTP request synthesizes: admission (429 when too many wait), the
    device queue, the tracked synthesis (its event in the store, its metrics), cancelled at
    the next sentence when the client goes away or ``cancel`` is set (499, recorded as
    ``cancelled``), 503 when the server stops first. ``on_audio`` gets each sentence as it is
    made (a stream). Returns the outcome and the audio as ``encode(samples, rate)``."""
    with service.admission():
        cancel = cancel or threading.Event()  # set when the client goes away: the
        watcher = asyncio.create_task(_watch_disconnect(request, cancel))  # synthesis stops
        try:
            return await run_in_threadpool(service.synthesize_wav, synthesis, synthesis_id,
                                           cancel, encode, on_audio)
        except Cancelled as exc:  # nobody to answer; recorded as "cancelled"
            raise ApiError(499, str(exc)) from None
        except asyncio.CancelledError:  # the server stops: this request ran out of time
            raise ApiError(503, "the service is shutting down and this synthesis did not "
                                "finish in time; send it again (to another instance)",
                           headers={"Retry-After": "1"}) from None
        finally:
            watcher.cancel()


# ----------------------------------------------------------------------------- responses
def _record_json(outcome: SynthesisOutcome, service: Service, synthesis_id: str,
                 notes: list[str]) -> dict[str, Any]:
    record, result = outcome.record, outcome.result
    memory = {
        name: {"before_bytes": c.before_bytes, "after_bytes": c.after_bytes,
               "peak_bytes": c.peak_bytes, "retained_bytes": c.retained_bytes,
               "transient_bytes": c.transient_bytes, "peak_delta_bytes": c.peak_delta_bytes}
        for name, c in record.breakdown.as_dict().items()
    }
    return {
        "synthesis_id": synthesis_id,
        "event_id": record.event_id,
        "load_event_id": outcome.load.event_id if outcome.load is not None else None,
        "engine": service.session.engine_name,
        "device": record.features.get("device"),
        "sample_rate": int(result.sample_rate),
        "audio_seconds": round(result.duration_s, 6),
        "wall_seconds": round(result.wall_s, 6),
        "rtf": round(result.rtf, 6) if result.rtf is not None else None,
        "waited_seconds": round(outcome.waited_s, 6),
        "seed": result.metadata.get("seed"),
        "attempts": len(outcome.attempts) or 1,
        "recovery": outcome.recovery,
        "notes": notes,
        "host_peak_source": record.peaks.host_rss_source,
        "memory": memory,
    }


def _headers(body: dict[str, Any]) -> dict[str, str]:
    headers = {
        "X-Synthesis-Id": body["synthesis_id"],
        "X-Synthesis-Event": body["event_id"],
        "X-Audio-Seconds": f"{body['audio_seconds']:.6f}",
        "X-Wall-Seconds": f"{body['wall_seconds']:.6f}",
        "X-Waited-Seconds": f"{body['waited_seconds']:.6f}",
        "X-Sample-Rate": str(body["sample_rate"]),
        "X-Attempts": str(body["attempts"]),
        "X-Synthesis-Notes": json.dumps(body["notes"]),
    }
    if body["load_event_id"] is not None:
        headers["X-Load-Event"] = body["load_event_id"]
    if body["rtf"] is not None:
        headers["X-RTF"] = f"{body['rtf']:.6f}"
    if body["seed"] is not None:
        headers["X-Seed"] = str(body["seed"])
    if body["recovery"] is not None:
        headers["X-Recovery"] = json.dumps(body["recovery"])[1:-1]
    for figure, title in _FIGURE_HEADERS.items():
        change = body["memory"][figure]
        if change["retained_bytes"] is not None:
            headers[f"X-{title}-Retained-Bytes"] = str(change["retained_bytes"])
        if change["peak_bytes"] is not None:
            headers[f"X-{title}-Peak-Bytes"] = str(change["peak_bytes"])
    return headers


def _response_headers_openapi() -> dict[str, Any]:
    def header(text: str, kind: str = "string") -> dict[str, Any]:
        return {"description": text, "schema": {"type": kind}}

    out = {
        "X-Synthesis-Id": header("Tag of this synthesis's CUDA memory events"),
        "X-Synthesis-Event": header("Id of the synthesis event in the store"),
        "X-Load-Event": header("Id of the load event, when this call loaded the model"),
        "X-Audio-Seconds": header("Length of the audio", "number"),
        "X-Wall-Seconds": header("Synthesis wall time", "number"),
        "X-Waited-Seconds": header("Time spent waiting for the device", "number"),
        "X-RTF": header("Real-time factor (wall / audio seconds)", "number"),
        "X-Sample-Rate": header("Sample rate of the audio, Hz", "integer"),
        "X-Seed": header("Seed used", "integer"),
        "X-Attempts": header("Attempts (2 after an out-of-memory recovery)", "integer"),
        "X-Recovery": header("What the out-of-memory recovery did, when one ran"),
        "X-Synthesis-Notes": header("JSON list of notes (text clean-up, ignored fields)"),
    }
    for title in _FIGURE_HEADERS.values():
        out[f"X-{title}-Retained-Bytes"] = header(f"{title}: after - before, bytes", "integer")
        out[f"X-{title}-Peak-Bytes"] = header(f"{title}: peak during the synthesis, bytes",
                                              "integer")
    return out


# ----------------------------------------------------------------------------- the app
def create_app(service: Service) -> FastAPI:
    """The HTTP application around ``service`` (the caller owns the service's lifetime)."""
    settings = service.settings
    caps = service.session.engine.capabilities
    app = FastAPI(
        title="GLM-TTS VRAM service",
        version="1",
        description="Text-to-speech with measured memory: synthesis, cleanup, memory figures, "
                    "CUDA memory snapshots and Prometheus metrics. One process holds one model;"
                    " syntheses are admitted as their predicted memory peaks fit the budget.",
        # /metrics is the observability interface here; FastAPI's OpenTelemetry hooks stay off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _pydantic_message(dict(exc.errors()[0]))
        return _error(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), None, exc.headers)

    @app.exception_handler(InvalidRequestError)
    async def invalid_request(request: Request, exc: InvalidRequestError) -> JSONResponse:
        return _error(422, str(exc), exc.field)

    @app.exception_handler(BusyError)
    async def busy(request: Request, exc: BusyError) -> JSONResponse:
        return _error(429, str(exc), None, {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(AdmissionRefusedError)
    async def over_budget(request: Request, exc: AdmissionRefusedError) -> JSONResponse:
        return _error(413, str(exc), "text", {
            "X-Predicted-Peak-Bytes": str(exc.predicted_bytes),
            "X-Memory-Budget-Bytes": str(exc.budget_bytes)})

    @app.exception_handler(OutOfMemoryError)
    async def out_of_memory(request: Request, exc: OutOfMemoryError) -> JSONResponse:
        return _error(503, str(exc), None, {"Retry-After": "5"})

    @app.exception_handler(SnapshotUnavailableError)
    async def no_snapshot(request: Request, exc: SnapshotUnavailableError) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(GlmTtsError)
    async def tts_error(request: Request, exc: GlmTtsError) -> JSONResponse:
        return _error(503, f"the service cannot synthesize now: {exc}")

    @app.exception_handler(BodyStalledError)
    async def stalled(request: Request, exc: BodyStalledError) -> JSONResponse:
        return _error(408, str(exc))

    @app.exception_handler(BodyTooLargeError)
    async def too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return _error(500, f"internal error ({type(exc).__name__}); see the service log")

    # ------------------------------------------------------------------------ routes
    @get_and_head(app, "/v1/health", response_model=schemas.HealthOut,
                   tags=["service"],
             responses=_errors(401), summary="Is the service up, and is its model loaded")
    def health() -> dict[str, Any]:
        return {"status": "ok", "engine": service.session.engine_name,
                "device": service.device, "loaded": service.session.loaded,
                "pending": service.pending}

    async def parse_synthesis(request: Request, stack: contextlib.ExitStack
                              ) -> tuple[SynthesisRequest, set[str]]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json" or content_type.endswith("+json"):
            body = await request.body()
            data = parse_json_body(body)
            if not isinstance(data, dict):
                raise ApiError(422, "the body must be a JSON object with at least a 'text' "
                                    "field")
            fields = _fields_from(data, strict=True)
            given = set(data)
            reference = None
        elif content_type == "multipart/form-data":
            data, reference, given = {}, None, set()
            async with request.form(max_files=1,
                                    max_fields=len(schemas.REQUEST_FIELDS) + 1) as form:
                for key, value in form.multi_items():
                    given.add(key)
                    if key == "reference_audio":
                        if not isinstance(value, UploadFile):
                            raise ApiError(422, "reference_audio must be a file upload",
                                           "reference_audio")
                        folder = Path(stack.enter_context(
                            tempfile.TemporaryDirectory(prefix="glmtts-upload-")))
                        reference = await run_in_threadpool(_read_audio_upload, value, folder)
                    elif isinstance(value, UploadFile):
                        raise ApiError(422, f"{key} must be a form field, not a file", key)
                    elif key in data:
                        raise ApiError(422, f"the field {key!r} is given twice", key)
                    else:
                        data[key] = value
            fields = _fields_from(data, strict=False)
        else:
            raise ApiError(415, "send the request as application/json, or as "
                                "multipart/form-data with the reference audio as a file")
        _check_lengths(fields, settings.max_text_chars)
        synthesis = SynthesisRequest(
            text=fields.text, reference_audio=reference, reference_text=fields.reference_text,
            sample_rate=fields.sample_rate, use_kv_cache=fields.use_kv_cache, seed=fields.seed,
            sampling_method=fields.sampling_method, speed=fields.speed)
        return synthesis, given

    @app.post(
        "/v1/synthesize", tags=["synthesis"],
        summary="Speak a text: WAV with the memory record in headers, or JSON",
        openapi_extra={"requestBody": schemas.request_body_openapi(settings.max_text_chars,
                                                                   caps)},
        responses={200: {"model": schemas.SynthesisJson,
                         "description": "audio/wav (default) or, with ?format=json, the record "
                                        "and the WAV in base64",
                         "content": {"audio/wav": {"schema": {"type": "string",
                                                              "format": "binary"}}},
                         "headers": _response_headers_openapi()},
                   **_errors(400, 401, 413, 415, 422, 429, 503)})
    async def synthesize(request: Request,
                         fmt: Literal["wav", "json"] = Query(
                             "wav", alias="format",
                             description="wav: the audio itself; json: record + base64 WAV")
                         ) -> Response:
        synthesis_id = new_synthesis_id()
        with contextlib.ExitStack() as stack:
            # The body is read and checked before a synthesis slot is taken: slow or broken
            # uploads cost a connection, never other clients' turn.
            synthesis, given = await parse_synthesis(request, stack)
            outcome, audio = await run_synthesis(service, request, synthesis, synthesis_id)
        notes = [*synthesis.notes, *_notes_for(service, given)]
        body = _record_json(outcome, service, synthesis_id, notes)
        headers = _headers(body)
        if fmt == "json":
            payload = {"record": body, "audio": {"media_type": "audio/wav",
                                                 "base64": base64.b64encode(audio).decode(),
                                                 "bytes": len(audio)}}
            return JSONResponse(payload, headers=headers)
        headers["Content-Disposition"] = f'inline; filename="tts-{synthesis_id}.wav"'
        return Response(audio, media_type="audio/wav", headers=headers)

    cleanup_levels = service.session.LEVELS if service.session.isolated else ("light", "full")

    @app.post(
        "/v1/cleanup", response_model=schemas.CleanupOut, tags=["memory"],
        summary="Free memory now: light (gc, empty_cache, malloc_trim), full (drop the "
                "model too) or, for an engine in a worker, restart (end the worker)",
        openapi_extra={"requestBody": schemas.cleanup_body_openapi(cleanup_levels)},
        responses=_errors(400, 401, 413, 415, 422))
    async def cleanup(request: Request) -> dict[str, Any]:
        body = await request.body()
        level = "full"
        if body.strip():
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if content_type.lower() != "application/json":
                raise ApiError(415, "send the cleanup level as application/json, e.g. "
                                    '{"level": "light"}')
            data = parse_json_body(body)
            if not isinstance(data, dict):
                raise ApiError(422, 'the body must be a JSON object, e.g. {"level": "light"}')
            try:
                level = schemas.CleanupBody.model_validate(data, strict=True).level
            except ValidationError as exc:
                message, field = _pydantic_message(exc.errors()[0])
                raise ApiError(422, message, field) from None
            if level not in cleanup_levels:
                raise ApiError(422, f"the cleanup level must be one of "
                                    f"{', '.join(cleanup_levels)}, "
                                    f"not {level!r}" + (" (restart ends an engine worker; "
                                                        "serve with --isolate)"
                                                        if level == "restart" else ""),
                               "level")
        result, loaded_before = await run_in_threadpool(service.cleanup, level)
        return {
            "level": result.level, "event_id": result.event.event_id,
            "duration_s": result.duration_s, "model_loaded_before": loaded_before,
            "model_loaded_after": service.session.loaded,
            "freed": {"torch_allocated_bytes": result.torch_allocated_freed_bytes,
                      "torch_reserved_bytes": result.torch_reserved_freed_bytes,
                      "nvml_process_bytes": result.nvml_process_freed_bytes,
                      "nvml_device_bytes": result.nvml_device_freed_bytes,
                      "host_rss_bytes": result.host_rss_freed_bytes},
            "predicted_releasable_bytes": result.predicted_releasable_bytes,
            "gc_collected": result.gc_collected,
            "empty_cache_called": result.empty_cache_called,
            "malloc_trimmed": result.malloc_trimmed,
            "worker_pid": result.details.get("worker_pid"),
            "upstream_modules_left": result.details.get("upstream_modules_left"),
        }

    @get_and_head(app, "/v1/memory", response_model=schemas.MemoryOut,
                   tags=["memory"],
             summary="Every memory figure now, the models held, and the policy's advice",
             responses=_errors(401))
    def memory(request: Request) -> dict[str, Any]:
        snapshot = service.snapshot()
        recommendation, note = None, None
        try:
            # the policy's sentences in English, or in Chinese for ``Accept-Language: zh``
            with speaking(request.headers.get("accept-language")):
                recommendation = _recommendation_json(service.recommendation(snapshot))
        except Exception as exc:  # advice must never cost /v1/memory its figures
            log.exception("the policy failed")
            note = f"the policy failed: {type(exc).__name__}: {exc}"
        store = service.store
        return {
            "snapshot": snapshot.to_dict(),
            "models": [dataclasses.asdict(m) for m in loaded_models()],
            "session": {"engine": service.session.engine_name, "device": service.device,
                        "loaded": service.session.loaded,
                        "synthesis_count": service.session.synthesis_count,
                        "session_id": service.session.session_id,
                        **service.precision()},
            "recommendation": recommendation,
            "recommendation_note": note,
            "memory_history": service.memory_history_state(),
            "admission": service.admission_state(),
            "idle": service.idle_state(),
            "store": {"path": store.path, "in_memory": store.in_memory,
                      "fallback_reason": store.fallback_reason},
        }

    @get_and_head(app, "/v1/memory/snapshot", tags=["memory"],
                   response_class=Response,
             summary="CUDA memory snapshot (pickle) for https://pytorch.org/memory_viz",
             responses={200: {"description": "torch.cuda.memory._snapshot(), pickled",
                              "content": {SNAPSHOT_MEDIA_TYPE: {
                                  "schema": {"type": "string", "format": "binary"}}}},
                        **_errors(401, 409)})
    def memory_snapshot() -> Response:
        history = service.history
        if history is None:
            from monitoring.allocator_history import MemoryHistory

            history = MemoryHistory()
        data = history.snapshot_bytes()
        return Response(data, media_type=SNAPSHOT_MEDIA_TYPE, headers={
            "Content-Disposition": f'attachment; filename="{snapshot_filename()}"',
            "X-Memory-History": "recording" if history.recording else "off"})

    @get_and_head(app, METRICS_PATH, tags=["service"],
                   response_class=Response,
             summary="Prometheus metrics (text format)",
             responses={200: {"description": "Prometheus text exposition format 0.0.4",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **({} if settings.metrics_public or settings.token is None
                           else _errors(401))})
    def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    from service.openai_api import OpenAITokenAuth, openai_router  # speech, models, voices

    app.include_router(openai_router(service))
    _install_openapi(app, service)
    public = frozenset({METRICS_PATH}) if settings.metrics_public else frozenset()
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes,
                       body_timeout_s=settings.body_timeout_s)
    app.add_middleware(OpenAITokenAuth, token=settings.token, public_paths=public)
    return app


def _recommendation_json(rec: Any) -> dict[str, Any]:
    figures = rec.to_features()
    return {
        "action": rec.action, "urgency": rec.urgency, "summary": rec.summary,
        "mode": rec.mode, "domain": rec.domain,
        "reasons": [{"rule": r.rule, "action": r.action, "urgency": r.urgency, "text": r.text}
                    for r in rec.reasons],
        **{k: figures.get(k) for k in ("predicted_peak_bytes", "predicted_peak_upper_bytes",
                                       "needed_bytes", "headroom_bytes", "light_frees_bytes",
                                       "full_frees_bytes", "reload_cost_s")},
    }


def _install_openapi(app: FastAPI, service: Service) -> None:
    """Describe the bearer token in the OpenAPI document when the service requires one."""
    settings = service.settings

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        if settings.token is not None:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "The service's token (--token or GLMTTS_TOKEN)"}}
            schema["security"] = [{"bearer": []}]
            if settings.metrics_public:
                schema["paths"][METRICS_PATH]["get"]["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
