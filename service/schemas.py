"""Request and response shapes of the HTTP API (pydantic), as the OpenAPI description shows them.

Request bodies are checked in two steps, so that the HTTP API gives the page's messages:

1. Types and unknown fields: a strict pydantic model (``5`` is not a string, ``"5"`` not an
   integer; unknown fields are refused).
2. Everything else, with the rules and messages of :class:`~glmtts.request.SynthesisRequest`
   and the engine (empty text, seed range, speed range, sample rates the engine produces...).

The JSON Schema the OpenAPI description publishes states the second step's rules too (ranges,
enums, lengths, "at least one letter or digit"), so that a request valid by the schema is one
the service accepts, except for what no schema can say (whether espeak-ng can pronounce a text,
whether uploaded bytes are audio).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from glmtts.engines.base import Capabilities
from glmtts.request import MAX_SEED, SAMPLING_METHODS, SPEED_RANGE, SynthesisRequest
from monitoring.snapshot import Snapshot

#: A text must contain a letter or a digit (``str.isalnum``): Python ``re`` spelling of it.
SPEAKABLE_PATTERN = r"[^\W_]"
#: Media types accepted for the reference audio upload (decoded with libsndfile).
AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/flac", "audio/ogg", "audio/mpeg")
#: Request fields an HTTP client may send (the voice is chosen when the service starts).
REQUEST_FIELDS = ("text", "reference_text", "sample_rate", "use_kv_cache", "seed",
                  "sampling_method", "speed")


def _request_fields_model() -> type[BaseModel]:
    """Types of the synthesis request fields (step 1), built from
    :class:`~glmtts.request.SynthesisRequest` itself (its annotations and defaults): the
    request's shape is written once."""
    hints = typing.get_type_hints(SynthesisRequest)
    fields = {f.name: f for f in dataclasses.fields(SynthesisRequest)}
    spec: dict[str, Any] = {}
    for name in REQUEST_FIELDS:
        default = fields[name].default
        spec[name] = (hints[name], ... if default is dataclasses.MISSING else default)
    return create_model("SynthesisFields", __config__=ConfigDict(extra="forbid"), **spec)


SynthesisFields = _request_fields_model()


class CleanupBody(BaseModel):
    """Body of ``POST /v1/cleanup`` (optional: no body means a full cleanup)."""

    model_config = ConfigDict(extra="forbid")

    level: str = Field("full", json_schema_extra={"enum": ["light", "full", "restart"]})


def synthesis_json_schema(max_chars: int, caps: Capabilities) -> dict[str, Any]:
    """JSON Schema of the JSON synthesis body, with every rule the service enforces."""
    rates: list[Any] = sorted(caps.sample_rates)
    lo, hi = SPEED_RANGE
    return {
        "title": "SynthesisBody",
        "type": "object",
        "additionalProperties": False,
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": max_chars,
                     "pattern": SPEAKABLE_PATTERN,
                     "description": f"What to say: at most {max_chars} characters, with at "
                                    f"least one letter or digit. Control characters are "
                                    f"removed and whitespace runs collapse (reported in "
                                    f"notes)."},
            "reference_text": {"type": ["string", "null"], "maxLength": max_chars,
                               "description": "Transcript of the reference audio (engines "
                                              "that clone a voice)."},
            "sample_rate": {"type": ["integer", "null"], "enum": [*rates, None],
                            "description": f"Output rate in Hz; null for the voice's own "
                                           f"({caps.native_sample_rate} Hz)."},
            "use_kv_cache": {"type": "boolean", "default": False,
                             "description": "GLM-TTS prompt-history cache switch."},
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED,
                     "description": "Random seed; same seed, same audio. null draws one "
                                    "(returned in X-Seed)."},
            "sampling_method": {"type": "string", "enum": list(SAMPLING_METHODS),
                                "default": "ras"},
            "speed": {"type": "number", "minimum": lo, "maximum": hi, "default": 1.0,
                      "description": "Speaking rate factor, 1.0 = the voice's own pace."},
        },
    }


def synthesis_form_schema(max_chars: int, caps: Capabilities) -> dict[str, Any]:
    """JSON Schema of the multipart variant: the same fields (no nulls: leave a field out
    instead) plus the reference audio file."""
    schema = synthesis_json_schema(max_chars, caps)
    props = {}
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        if isinstance(prop.get("type"), list):
            prop["type"] = next(t for t in prop["type"] if t != "null")
        if "enum" in prop:
            prop["enum"] = [v for v in prop["enum"] if v is not None]
        props[name] = prop
    props["reference_audio"] = {
        "type": "string", "format": "binary",
        "description": "Reference (prompt) recording: WAV, FLAC, OGG or MP3."}
    return {**schema, "title": "SynthesisForm", "properties": props}


def request_body_openapi(max_chars: int, caps: Capabilities) -> dict[str, Any]:
    """The ``requestBody`` object of ``POST /v1/synthesize``: JSON or multipart."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": synthesis_json_schema(max_chars, caps)},
            "multipart/form-data": {
                "schema": synthesis_form_schema(max_chars, caps),
                "encoding": {"reference_audio": {"contentType": ", ".join(AUDIO_TYPES)}},
            },
        },
    }


def cleanup_body_openapi(levels: tuple[str, ...] = ("light", "full")) -> dict[str, Any]:
    """The ``requestBody`` object of ``POST /v1/cleanup`` (optional), offering ``levels`` (a
    service with its engine in a worker also offers ``restart``)."""
    schema = CleanupBody.model_json_schema()
    schema["properties"]["level"]["enum"] = list(levels)
    return {"required": False, "content": {"application/json": {"schema": schema}}}


# ----------------------------------------------------------------------------- responses
class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: what is wrong, and which request field (if one)."""

    error: str
    field: str | None = None


class Change(BaseModel):
    """One memory figure across the synthesis (bytes; null where not measurable)."""

    before_bytes: int | None
    after_bytes: int | None
    peak_bytes: int | None
    retained_bytes: int | None = Field(description="after - before")
    transient_bytes: int | None = Field(description="peak - after")
    peak_delta_bytes: int | None = Field(description="peak - before")


class SynthesisRecord(BaseModel):
    """The measured synthesis (the same event the store holds)."""

    synthesis_id: str = Field(description="Tag of this synthesis's CUDA memory events")
    event_id: str = Field(description="Id of the synthesis event in the store")
    load_event_id: str | None = Field(description="Id of the load event, if this call loaded "
                                                  "the model")
    engine: str
    device: str | None
    sample_rate: int
    audio_seconds: float
    wall_seconds: float
    rtf: float | None = Field(description="wall / audio seconds; null for empty audio")
    waited_seconds: float = Field(description="Time spent waiting for the device")
    seed: int | None
    attempts: int = Field(description="2 after an out-of-memory recovery")
    recovery: str | None
    notes: list[str]
    host_peak_source: str | None = Field(description="vmhwm (exact) or sampler (lower bound)")
    memory: dict[str, Change] = Field(description="By figure: torch_allocated, torch_reserved,"
                                                  " torch_inactive_split, non_torch_gpu, "
                                                  "nvml_process, nvml_device, host_rss, "
                                                  "host_heap_in_use, host_heap_releasable "
                                                  "(glibc heap: after only; null elsewhere)")


class AudioPayload(BaseModel):
    media_type: str
    base64: str
    bytes: int


class SynthesisJson(BaseModel):
    """``POST /v1/synthesize?format=json``: the record and the WAV in base64."""

    record: SynthesisRecord
    audio: AudioPayload


class Freed(BaseModel):
    """Bytes a cleanup freed per figure (before - after; negative: it grew; null: unknown)."""

    torch_allocated_bytes: int | None
    torch_reserved_bytes: int | None
    nvml_process_bytes: int | None
    nvml_device_bytes: int | None
    host_rss_bytes: int | None


class CleanupOut(BaseModel):
    level: str
    event_id: str
    duration_s: float
    model_loaded_before: bool
    model_loaded_after: bool
    freed: Freed
    predicted_releasable_bytes: int | None = Field(
        description="torch: what empty_cache() could free when the cleanup started")
    gc_collected: int | None = Field(description="None for a restart (no gc ran)")
    empty_cache_called: bool
    malloc_trimmed: bool | None
    worker_pid: int | None = Field(
        None, description="the engine worker the cleanup ran in or ended (None: in process)")
    upstream_modules_left: int | None = Field(
        None, description="GLM-TTS modules the worker still holds (0 after a full cleanup)")


def _snapshot_model() -> type[BaseModel]:
    """A pydantic model of :meth:`Snapshot.to_dict` (built from the dataclass, so it follows
    its fields)."""
    hints = typing.get_type_hints(Snapshot)
    fields: dict[str, Any] = {f.name: (hints[f.name], ...) for f in dataclasses.fields(Snapshot)}
    gpu_type = typing.get_args(hints["gpus"])[0]
    fields["gpus"] = (list[gpu_type], ...)
    fields["non_torch_gpu_bytes"] = (int | None, ...)
    return create_model("MemorySnapshot", __doc__=Snapshot.__doc__, **fields)


MemorySnapshot = _snapshot_model()


class ModelOut(BaseModel):
    session_label: str
    engine: str
    voice: str | None
    device: str
    weights_bytes: int | None
    dtype: str | None = Field(None, description="precision of the weights (fp32, bf16, fp16)")
    dtype_requested: str | None = Field(None, description="the dtype option as given (auto: "
                                                          "chosen at load)")


class SessionOut(BaseModel):
    engine: str
    device: str
    loaded: bool
    synthesis_count: int
    session_id: str | None
    dtype: str | None = Field(None, description="precision of the weights, loaded or next")
    dtype_requested: str | None = Field(None, description="the dtype option as given")
    dtype_reason: str | None = Field(None, description="why auto chose a 16-bit precision "
                                                       "at the last load (one line)")


class ReasonOut(BaseModel):
    rule: str
    action: str
    urgency: str
    text: str


class RecommendationOut(BaseModel):
    """The policy's verdict now (no pending request)."""

    action: str
    urgency: str
    summary: str
    mode: str
    domain: str | None
    reasons: list[ReasonOut]
    predicted_peak_bytes: int | None = Field(
        None, description="The pending request's predicted peak (null: no pending request)")
    predicted_peak_upper_bytes: int | None = Field(
        None, description="Its upper bound, as the advice quotes it")
    needed_bytes: int | None
    headroom_bytes: int | None
    light_frees_bytes: int | None
    full_frees_bytes: int | None
    reload_cost_s: float | None


class MemoryHistoryOut(BaseModel):
    recording: bool
    max_entries: int


class StoreOut(BaseModel):
    path: str
    in_memory: bool
    fallback_reason: str | None


class AdmissionOut(BaseModel):
    """The memory-aware admission (:mod:`service.admission`)."""

    budget_bytes: int | None = Field(description="Budget now: free memory on the model's "
                                                  "device, capped by --memory-budget")
    budget_source: str
    explicit_budget_bytes: int | None
    admitted_bytes: int = Field(description="Predicted peak bytes of the syntheses running")
    admitted: int = Field(description="Syntheses running now")
    queued: int = Field(description="Syntheses waiting, in arrival order")
    capacity: int | None = Field(description="Syntheses at once regardless of memory (null: "
                                             "no cap)")
    capacity_reason: str | None
    max_admitted_bytes: int = Field(description="Most predicted bytes ever admitted at once")
    max_admitted: int = Field(description="Most syntheses ever admitted at once")
    admitted_total: int
    refused_total: int = Field(description="Requests refused as too big even alone")
    median_duration_s: float | None
    unseen_peak_bytes: int = Field(description="Predicted peak before any usable history")
    concurrent: bool = Field(description="Whether syntheses may overlap on this model")


class IdleOut(BaseModel):
    """The idle release (:mod:`service.idle`)."""

    enabled: bool
    tiers_s: list[float]
    levels: list[str]
    busy: bool
    holding: bool = Field(description="Whether a model or a worker is held (nothing to "
                                      "release otherwise: no tier is due)")
    idle_s: float
    next_tier: int | None
    next_level: str | None
    next_in_s: float | None = Field(description="Seconds until the next tier fires")
    fired: list[dict[str, Any]] = Field(description="Tiers run (or skipped) this idle period")
    recent: list[dict[str, Any]] = Field(description="The last tiers run, newest last; "
                                         "return_s: the measured reload that followed")


class MemoryOut(BaseModel):
    """``GET /v1/memory``."""

    snapshot: MemorySnapshot  # type: ignore[valid-type]
    models: list[ModelOut]
    session: SessionOut
    recommendation: RecommendationOut | None
    recommendation_note: str | None = Field(
        description="Why the recommendation is null, when it is")
    memory_history: MemoryHistoryOut
    store: StoreOut
    admission: AdmissionOut
    idle: IdleOut


class HealthOut(BaseModel):
    status: str
    engine: str
    device: str
    loaded: bool
    pending: int = Field(description="Syntheses waiting for the device or running")
