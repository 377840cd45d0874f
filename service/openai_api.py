"""OpenAI-compatible routes: ``POST /v1/audio/speech``, ``GET /v1/models``, the voice registry
(``/v1/voices``), and the ``/health`` and ``/ready`` probes.

A speech request goes through the very path ``/v1/synthesize`` takes
(:func:`service.app.run_synthesis`: admission, the device queue, the tracked synthesis with its
event in the store and its metrics, cancellation when the client goes away); only the request's
shape, the output formats and the error shape differ. Errors of these routes are OpenAI's
``{"error": {"message", "type", "param", "code"}}``, so OpenAI's clients raise their own
exception classes (``BadRequestError``, ``AuthenticationError``...).

Names from OpenAI are mapped, not refused: the models ``tts-1``, ``tts-1-hd`` and
``gpt-4o-mini-tts*`` mean this service's engine; the voices ``alloy``, ``echo``... (and
``default``) mean the engine's own voice. A registered voice (``POST /v1/voices``) is a
reference clip and its transcript, given to engines that clone a voice.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from glmtts.engines import engine_class
from glmtts.errors import GlmTtsError, InvalidRequestError, OutOfMemoryError
from glmtts.paths import voices_folder
from glmtts.reference_audio import ReferenceAudioError
from glmtts.request import MAX_SEED, SPEED_RANGE, SynthesisRequest
from service import audio_formats, schemas
from service.admission import AdmissionRefusedError
from service.errors import BusyError
from service.middleware import BodyStalledError, BodyTooLargeError, TokenAuth
from service.routing import get_and_head
from service.runtime import Service, new_synthesis_id
from service.speech_stream import stream_speech
from service.voices import NAME_PATTERN, VoiceRegistryError, VoiceStore, gate_reference

log = logging.getLogger(__name__)

#: OpenAI's built-in voice names: each means the engine's own voice here.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                 "shimmer", "verse", "marin", "cedar")
#: OpenAI's speech model names: each means this service's engine.
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
#: The ``speed`` range OpenAI's API takes (the service's own is :data:`SPEED_RANGE`).
OPENAI_SPEED = (0.25, 4.0)
#: Paths whose errors (401 included) take OpenAI's shape.
OPENAI_PREFIXES = ("/v1/audio/", "/v1/models", "/v1/voices")
#: Request field -> the speech body's name for it (errors name what the client sent).
_PARAM = {"text": "input", "reference_audio": "ref_audio", "reference_text": "ref_text",
          "sample_rate": "response_format"}
_TYPES = {401: "authentication_error", 404: "not_found_error", 409: "conflict_error",
          429: "rate_limit_error"}
#: Fields of the speech body (``seed`` is ours; ``instructions`` is accepted and ignored).
SPEECH_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions",
                 "stream_format", "ref_audio", "ref_text", "seed")


class OpenAIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for ``status``."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: BaseException) -> JSONResponse:
    """Any exception of a route here, as OpenAI's error shape (field names as sent)."""
    from service.app import ApiError

    if isinstance(exc, OpenAIError):
        err = exc
    elif isinstance(exc, VoiceRegistryError):
        err = OpenAIError(exc.status, str(exc), exc.field, exc.code)
    elif isinstance(exc, ApiError):  # bad JSON, the client gone (499), shutting down (503)
        status = 400 if exc.status == 422 else exc.status
        err = OpenAIError(status, exc.message, _PARAM.get(exc.field or "", exc.field),
                          headers=exc.headers)
    elif isinstance(exc, InvalidRequestError):
        err = OpenAIError(400, str(exc), _PARAM.get(exc.field, exc.field), "invalid_value")
    elif isinstance(exc, BusyError):
        err = OpenAIError(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    elif isinstance(exc, AdmissionRefusedError):
        err = OpenAIError(413, str(exc), "input", "memory_budget_exceeded", headers={
            "X-Predicted-Peak-Bytes": str(exc.predicted_bytes),
            "X-Memory-Budget-Bytes": str(exc.budget_bytes)})
    elif isinstance(exc, OutOfMemoryError):
        err = OpenAIError(503, str(exc), code="out_of_memory", headers={"Retry-After": "5"})
    elif isinstance(exc, GlmTtsError):
        err = OpenAIError(503, f"the service cannot synthesize now: {exc}")
    elif isinstance(exc, RequestValidationError):
        first = dict(exc.errors()[0])
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        err = OpenAIError(400, str(first.get("msg", "invalid value")), loc[0] if loc else None)
    elif isinstance(exc, StarletteHTTPException):
        err = OpenAIError(exc.status_code, str(exc.detail), headers=exc.headers)
    elif isinstance(exc, BodyTooLargeError):
        err = OpenAIError(413, str(exc))
    elif isinstance(exc, BodyStalledError):
        err = OpenAIError(408, str(exc))
    else:
        log.error("unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
        err = OpenAIError(500, f"internal error ({type(exc).__name__}); see the service log")
    return JSONResponse(error_body(err.status, err.message, err.param, err.code),
                        status_code=err.status, headers=err.headers)


class OpenAIRoute(APIRoute):
    """A route whose every error is answered in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error gets OpenAI's shape
                return error_response(exc)  # (an unexpected one is logged there)

        return route


class OpenAITokenAuth(TokenAuth):
    """:class:`~service.middleware.TokenAuth`, answering the OpenAI paths' 401 in OpenAI's
    shape (``code: invalid_api_key``), so OpenAI's clients raise ``AuthenticationError``
    with the message."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(OPENAI_PREFIXES) or self.allowed(scope):
            await super().__call__(scope, receive, send)
            return
        response = JSONResponse(
            error_body(401, "this service needs its token: send the header 'Authorization: "
                            "Bearer <token>' (the OpenAI client's api_key)", None,
                       "invalid_api_key"),
            status_code=401, headers={"WWW-Authenticate": 'Bearer realm="glmtts"'})
        await response(scope, receive, send)


# ----------------------------------------------------------------------------- shapes
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """Every error of the OpenAI-compatible routes."""

    error: ErrorDetail


class VoiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


class SpeechBody(BaseModel):
    """Types of ``POST /v1/audio/speech`` (values are checked after, with messages)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str
    voice: str | VoiceRef = "default"
    response_format: str = "mp3"
    speed: float = 1.0
    instructions: str | None = None
    stream_format: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    seed: int | None = None


class ModelOut(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str
    engine: str = Field(description="The engine this name runs")


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelOut]


class VoiceOut(BaseModel):
    id: str
    object: str
    name: str
    text: str
    format: str
    sample_rate: int
    channels: int
    duration_s: float
    bytes: int
    created_at: int


class VoiceCreated(VoiceOut):
    evicted: list[str] = Field(description="Voices removed to make room (the oldest, when "
                                           "the registry already held its maximum)")


class VoiceList(BaseModel):
    object: str = "list"
    data: list[VoiceOut]


class VoiceDeleted(BaseModel):
    id: str
    object: str = "voice.deleted"
    deleted: bool


class Probe(BaseModel):
    status: str
    engine: str
    loaded: bool
    reason: str | None = None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {400: "A field is invalid (param names it)", 401: "The token is missing or wrong",
             404: "No such model or voice", 409: "A voice of that name exists",
             413: "The body is larger than the limit (the service's error shape), or the "
                  "request's predicted memory peak exceeds the memory budget even alone "
                  "(OpenAI's shape, code memory_budget_exceeded)",
             415: "The body's media type is not accepted",
             429: "Too many syntheses are waiting; retry later",
             503: "Out of memory even after a cleanup and a retry, or the model cannot load"}
    return {code: {"model": schemas.ErrorBody | OpenAIErrorBody if code == 413 else
                   OpenAIErrorBody,
                   "description": texts[code]} for code in codes}


# ----------------------------------------------------------------------------- the router
def openai_router(service: Service) -> APIRouter:
    """The OpenAI-compatible routes of ``service`` (include them in its app)."""
    from service.app import _headers, _notes_for, _record_json, parse_json_body, run_synthesis

    settings = service.settings
    session = service.session
    engine = session.engine
    caps = engine.capabilities
    started = int(time.time())
    formats = audio_formats.available_formats()
    default_format = "mp3" if "mp3" in formats else "wav"
    own_voice = getattr(engine, "voice_name", None)
    builtin = {*OPENAI_VOICES, "default", *([own_voice] if own_voice else [])}
    served = {session.engine_name, engine.name}
    voices = VoiceStore(voices_folder(settings.db), reserved=frozenset(builtin),
                        max_text_chars=settings.max_text_chars)
    router = APIRouter(route_class=OpenAIRoute, tags=["openai"])

    def resolve_model(name: str) -> None:
        if name in served or name in OPENAI_MODELS or name.startswith("gpt-4o-mini-tts-"):
            return
        raise OpenAIError(404, f"this service runs the {session.engine_name} engine: use "
                               f"model {engine.name!r} (or {', '.join(OPENAI_MODELS)}); "
                               f"another engine needs its own service (serve --engine "
                               f"{name})", "model", "model_not_found")

    def check_speech(body: SpeechBody) -> tuple[audio_formats.OutputFormat, str | None]:
        resolve_model(body.model)
        fmt = formats.get(body.response_format)
        if fmt is None:
            lacking = (" (libsndfile has no AAC writer)"
                       if body.response_format in audio_formats.UNWRITABLE else "")
            raise OpenAIError(400, f"response_format {body.response_format!r} is not "
                                   f"available here{lacking}; choose one of "
                                   f"{', '.join(formats)}", "response_format",
                              "unsupported_value")
        if body.stream_format not in (None, "audio", "sse"):
            raise OpenAIError(400, f"stream_format {body.stream_format!r} is unknown; use "
                                   f"'audio' or 'sse' (or leave it out)", "stream_format",
                              "unsupported_value")
        if body.stream_format == "sse" and fmt.name not in audio_formats.STREAMABLE:
            raise OpenAIError(400, f"an sse stream carries {' or '.join(audio_formats.STREAMABLE)}"
                                   f", not {fmt.name}: set response_format", "response_format",
                              "unsupported_value")
        lo, hi = OPENAI_SPEED
        if not lo <= body.speed <= hi:
            raise OpenAIError(400, f"speed must be between {lo} and {hi}, not {body.speed}",
                              "speed", "invalid_value")
        if not SPEED_RANGE[0] <= body.speed <= SPEED_RANGE[1]:
            raise OpenAIError(400, f"speed {body.speed} is outside what this service speaks: "
                                   f"{SPEED_RANGE[0]} to {SPEED_RANGE[1]} times the voice's "
                                   f"pace", "speed", "unsupported_value")
        for name, value in (("input", body.input), ("ref_text", body.ref_text)):
            if value is not None and len(value) > settings.max_text_chars:
                raise OpenAIError(400, f"{name} has {len(value):,} characters; the limit is "
                                       f"{settings.max_text_chars:,} per request: split it",
                                  name, "string_above_max_length")
        voice = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
        return fmt, None if voice in builtin else voice

    def reference_for(body: SpeechBody, voice: str | None, stack: contextlib.ExitStack
                      ) -> tuple[Path | None, str | None]:
        """The reference clip and transcript of a request (a registered voice, or a one-off
        ``ref_audio``), through the reference-audio gate; the engine decodes it only if it
        clones voices."""
        if voice is not None:
            found = voices.get(voice)
            if found is None:
                known = sorted(builtin | {v.name for v in voices.list()})
                raise OpenAIError(400, f"no voice called {voice!r}; the voices are: "
                                       f"{', '.join(known)}", "voice", "voice_not_found")
            if body.ref_audio is not None:
                raise OpenAIError(400, "give a registered voice or ref_audio, not both",
                                  "ref_audio")
            return voices.audio_path(found), body.ref_text or found.text
        if body.ref_audio is None:
            return None, body.ref_text
        try:
            data = base64.b64decode(body.ref_audio, validate=True)
        except (binascii.Error, ValueError):
            raise OpenAIError(400, "ref_audio must be the audio file in base64",
                              "ref_audio", "invalid_value") from None
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glmtts-ref-")))
        try:
            return gate_reference(data, folder)[0], body.ref_text
        except ReferenceAudioError as exc:
            raise OpenAIError(400, f"ref_audio cannot be used: {exc}", "ref_audio",
                              "invalid_value") from None

    def parse_speech(data: Any) -> SpeechBody:
        if not isinstance(data, dict):
            raise OpenAIError(400, "the body must be a JSON object with model, input and "
                                   "voice")
        data.setdefault("response_format", default_format)
        seed = data.get("seed")  # JSON has one number type: 5.0 is the integer 5
        if isinstance(seed, float) and seed.is_integer():
            data["seed"] = int(seed)
        try:
            return SpeechBody.model_validate(data, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = [str(p) for p in first.get("loc", ())]
            param = loc[0] if loc else None
            if first.get("type") == "extra_forbidden":
                message = f"unknown field {param!r}; the fields are: {', '.join(SPEECH_FIELDS)}"
            elif first.get("type") == "missing":
                message = f"the field {param!r} is required"
            else:
                message = f"{param}: {first.get('msg', 'invalid value')}"
            raise OpenAIError(400, message, param, "invalid_type") from None

    @router.post(
        "/v1/audio/speech", summary="OpenAI-compatible speech: the audio of a text",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": speech_schema(settings.max_text_chars, served, builtin, formats)}}}},
        responses={200: {"description": "The audio in response_format (pcm: s16le mono at "
                                        "X-Sample-Rate), with the memory record in headers",
                         "content": {**{f.media_type: {"schema": {"type": "string"}}
                                        for f in formats.values()},
                                     "text/event-stream": {"schema": SSE_EVENT_SCHEMA}}},
                   **_errors(400, 401, 404, 413, 415, 429, 503)})
    async def speech(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise OpenAIError(415, "send the request as application/json")
        started = time.perf_counter()
        body = parse_speech(parse_json_body(await request.body()))
        fmt, voice = check_speech(body)
        synthesis_id = new_synthesis_id()
        ask_rate, write_rate = audio_formats.output_rate(fmt, caps.native_sample_rate,
                                                         caps.sample_rates)
        streamed = body.stream_format is not None and fmt.name in audio_formats.STREAMABLE
        with contextlib.ExitStack() as stack:
            reference, ref_text = await run_in_threadpool(reference_for, body, voice, stack)
            try:
                synthesis = SynthesisRequest(
                    text=body.input, reference_audio=reference, reference_text=ref_text,
                    sample_rate=None if ask_rate == caps.native_sample_rate else ask_rate,
                    # a stream's seed is fixed, so that an out-of-memory retry repeats the
                    # sentences already sent exactly (and they are skipped)
                    seed=body.seed if body.seed is not None or not streamed else
                    random.randrange(2**31), speed=body.speed)
            except InvalidRequestError as exc:
                raise OpenAIError(400, str(exc), _PARAM.get(exc.field, exc.field),
                                  "invalid_value") from None
            if streamed:
                return await stream_speech(
                    service, request, synthesis, synthesis_id, kind=str(body.stream_format),
                    fmt=fmt, started=started, cleanup=stack.pop_all(),
                    error_event=lambda exc: {"type": "error",
                                             **json.loads(error_response(exc).body)})
            outcome, audio = await run_synthesis(
                service, request, synthesis, synthesis_id,
                lambda samples, rate: audio_formats.encode(samples, rate, fmt, write_rate))
        given = {k for k, v in (("reference_audio", reference), ("reference_text", ref_text))
                 if v is not None}
        notes = [*synthesis.notes, *_notes_for(service, given)]
        if body.speed != 1.0 and caps.reason("speed") is not None:
            notes.append(f"speed is ignored by the {session.engine_name} engine: "
                         f"{caps.reason('speed')}")
        if body.instructions:
            notes.append("instructions are accepted and ignored: no engine here takes them")
        headers = _headers(_record_json(outcome, service, synthesis_id, notes))
        headers["X-Sample-Rate"] = str(write_rate)
        headers["Content-Disposition"] = (f'inline; filename="speech-{synthesis_id}.'
                                          f'{"raw" if fmt.name == "pcm" else fmt.name}"')
        service.first_audio.labels("none").observe(time.perf_counter() - started)
        return Response(audio, media_type=fmt.media_type, headers=headers)

    @get_and_head(router, "/v1/models", response_model=ModelList,
                      summary="The models (engine names) this service answers to",
                      responses=_errors(401))
    def models() -> dict[str, Any]:
        names = [engine.name, *sorted(served - {engine.name}), *OPENAI_MODELS]
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": started, "owned_by": "glmtts",
             "engine": session.engine_name} for n in dict.fromkeys(names)]}

    @get_and_head(router, "/v1/voices", response_model=VoiceList,
                      summary="Registered voices (reference clip and transcript)",
                      responses=_errors(401))
    def list_voices() -> dict[str, Any]:
        return {"object": "list", "data": [v.to_json() for v in voices.list()]}

    @router.post(
        "/v1/voices", response_model=VoiceCreated, status_code=201,
        summary="Register a voice: a reference clip (WAV, FLAC, OGG, MP3) and its transcript; "
                "past 100 voices the oldest is removed (evicted)",
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": voice_form_schema(builtin, settings.max_text_chars),
            "encoding": {"audio": {"contentType": ", ".join(schemas.AUDIO_TYPES)}}}}}},
        responses=_errors(400, 401, 409, 413, 415))
    async def register_voice(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "multipart/form-data":
            raise OpenAIError(415, "send the voice as multipart/form-data: name, text and the "
                                   "clip as the file 'audio'")
        fields: dict[str, str] = {}
        audio: UploadFile | None = None
        async with request.form(max_files=1, max_fields=3) as form:
            for key, value in form.multi_items():
                if key == "audio":
                    if not isinstance(value, UploadFile):
                        raise OpenAIError(400, "audio must be a file upload", "audio")
                    audio = value
                elif key not in ("name", "text") or isinstance(value, UploadFile):
                    raise OpenAIError(400, f"unknown field {key!r}; send name, text and the "
                                           f"file audio", key)
                elif key in fields:
                    raise OpenAIError(400, f"the field {key!r} is given twice", key)
                else:
                    fields[key] = value
            for key in ("name", "text", "audio"):
                if key not in fields and not (key == "audio" and audio is not None):
                    raise OpenAIError(400, f"the field {key!r} is required", key)
            assert audio is not None
            data = await audio.read()
        voice = await run_in_threadpool(voices.register, fields["name"], fields["text"], data)
        return {**voice.to_json(), "evicted": list(voice.evicted)}

    @router.delete("/v1/voices/{name}", response_model=VoiceDeleted,
                   summary="Delete a registered voice", responses=_errors(401, 404))
    def delete_voice(name: str = PathParam(pattern=f"^{NAME_PATTERN.pattern}$")
                     ) -> dict[str, Any]:
        voice = voices.delete(name)
        return {"id": voice.name, "object": "voice.deleted", "deleted": True}

    @get_and_head(router, "/health", response_model=Probe,
                      summary="Liveness: the service answers", responses=_errors(401))
    def health() -> dict[str, Any]:
        return {"status": "ok", "engine": session.engine_name, "loaded": session.loaded}

    @get_and_head(router, "/ready", response_model=Probe,
                      summary="Readiness: the model is loaded, or its engine can load here",
                      responses={503: {"model": Probe, "description": "The engine cannot "
                                                                      "run here (reason)"},
                                 **_errors(401)})
    def ready() -> Response:
        reason = None
        if not session.loaded:
            try:
                reason = engine_class(settings.engine).problem_for(settings.engine_options)
                device = service.device  # resolving the device may raise
                reason = reason or _dtype_problem(settings.engine_options, device)
            except GlmTtsError as exc:
                reason = str(exc)
        body = {"status": "ready" if reason is None else "unavailable",
                "engine": session.engine_name, "loaded": session.loaded, "reason": reason}
        return JSONResponse(body, status_code=200 if reason is None else 503)

    return router


def _dtype_problem(options: dict[str, Any], device: str) -> str | None:
    """Why the chosen precision cannot run on ``device`` (this process's torch answers; one
    without CUDA cannot say for a GPU, and the load will)."""
    from glmtts.precision import dtype_problem

    try:
        return dtype_problem(str(options.get("dtype", "auto")), device)
    except (RuntimeError, AssertionError):
        return None


# ----------------------------------------------------------------------------- schemas
def speech_schema(max_chars: int, models: set[str], voices: set[str],
                  formats: dict[str, audio_formats.OutputFormat]) -> dict[str, Any]:
    """JSON Schema of the speech body, with the values the service accepts."""
    lo, hi = SPEED_RANGE
    voice_names = sorted(voices)
    return {
        "title": "SpeechBody", "type": "object", "additionalProperties": False,
        "required": ["model", "input"],
        # an sse stream carries pcm or wav (response_format's default is mp3)
        "if": {"required": ["stream_format"], "properties": {"stream_format": {"const": "sse"}}},
        "then": {"required": ["response_format"], "properties": {"response_format": {
            "enum": [f for f in audio_formats.STREAMABLE if f in formats]}}},
        "properties": {
            "model": {"type": "string", "enum": sorted(models) + list(OPENAI_MODELS),
                      "description": "This service's engine; OpenAI's model names mean it"},
            # no "pattern" for "at least one letter or digit": JSON Schema's regex dialect
            # (ECMA-262) reads \w as ASCII only, Python's as any script's letters
            "input": {"type": "string", "minLength": 1, "maxLength": max_chars,
                      "description": "What to say: at least one letter or digit (in any "
                                     "script)"},
            "voice": {"anyOf": [
                {"type": "string", "enum": voice_names},
                {"type": "object", "additionalProperties": False, "required": ["id"],
                 "properties": {"id": {"type": "string", "enum": voice_names}}}],
                "description": "OpenAI's voice names (alloy...) and 'default' mean the "
                               "engine's own voice; a registered voice's name works too"},
            "response_format": {"type": "string", "enum": list(formats),
                                "description": "pcm: s16le mono at X-Sample-Rate"},
            "speed": {"type": "number", "minimum": lo, "maximum": hi, "default": 1.0,
                      "description": f"OpenAI's range is {OPENAI_SPEED[0]}-{OPENAI_SPEED[1]};"
                                     f" this service speaks {lo}-{hi} (400 outside)"},
            "instructions": {"type": ["string", "null"],
                             "description": "Accepted and ignored"},
            "stream_format": {"type": ["string", "null"], "enum": ["audio", "sse", None],
                              "description": "audio: pcm and wav go out sentence by sentence "
                                             "(other formats whole); sse: pcm or wav as "
                                             "speech.audio.delta events"},
            "ref_audio": {"type": ["string", "null"], "format": "audio-base64",
                          "description": "A reference clip (WAV, FLAC, OGG, MP3) in base64, "
                                         "for engines that clone a voice"},
            "ref_text": {"type": ["string", "null"], "maxLength": max_chars,
                         "description": "Transcript of ref_audio"},
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED},
        },
    }


#: One event of an ``sse`` speech stream (each event's ``data`` is one JSON object).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["data"],
    "properties": {"data": {
        "type": "string", "contentMediaType": "application/json",
        "contentSchema": {"type": "object", "required": ["type"], "oneOf": [
            {"properties": {"type": {"const": "speech.audio.delta"},
                            "audio": {"type": "string", "contentEncoding": "base64"}},
             "required": ["audio"]},
            {"properties": {"type": {"const": "speech.audio.done"},
                            "synthesis_id": {"type": "string"}, "event_id": {"type": "string"},
                            "sample_rate": {"type": "integer"},
                            "audio_seconds": {"type": "number"}},
             "required": ["event_id", "sample_rate", "audio_seconds"]},
            {"properties": {"type": {"const": "error"}, "error": {"type": "object"}},
             "required": ["error"]}]}}},
}


def voice_form_schema(reserved: set[str], max_chars: int) -> dict[str, Any]:
    """JSON Schema of the voice registration form."""
    return {
        "title": "VoiceForm", "type": "object", "required": ["name", "text", "audio"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$",
                     "not": {"enum": sorted(reserved)}},
            "text": {"type": "string", "minLength": 1, "maxLength": max_chars,
                     "pattern": r"\S", "description": "Transcript of the clip"},
            "audio": {"type": "string", "format": "binary",
                      "description": "The clip: WAV, FLAC, OGG or MP3, at most 30 s"},
        },
    }
