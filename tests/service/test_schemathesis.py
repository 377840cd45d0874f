"""Property-based run of the service's own OpenAPI description (schemathesis), over loopback.

Every operation is exercised, nothing is mocked. Checks: every built-in schemathesis check
except ``positive_data_acceptance``, which is replaced by a stricter-worded equivalent below:
a request valid by the schema must be accepted, except when the engine says the text has
nothing espeak-ng can pronounce (no JSON Schema can say which letters espeak-ng reads).
Uploaded reference audio is drawn as real WAV bytes (a media-type strategy for ``audio/wav``,
which the schema names as the upload's content type, and a string-format strategy for the
speech route's base64 ``ref_audio``), so valid uploads are valid audio. Deleting a voice that
was never registered is a valid request answered 404.

Bounded: 25 schema-valid and 25 schema-invalid examples per operation (hypothesis
``max_examples``), derandomised, texts of at most 24 characters (the service's
``--max-text-chars``). (``schema.parametrize`` with ``from_fixture`` needs pytest internals that
pytest 9 no longer has, so the operations are parametrised here and each runs its strategy.)
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext
from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = pytest.mark.slow

UNPRONOUNCEABLE = "espeak-ng found nothing to pronounce in the text"
NO_LETTERS = "nothing to speak: the text has no letters or digits"


@st.composite
def wav_files(draw: st.DrawFn) -> bytes:
    """Short valid WAV files: random length, rate, channels and samples."""
    import soundfile as sf

    rate = draw(st.sampled_from([8000, 16000, 22050, 44100]))
    frames = draw(st.integers(1, 400))
    channels = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    audio = np.random.default_rng(seed).uniform(-1, 1, (frames, channels))
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype=draw(st.sampled_from(["PCM_16", "FLOAT"])))
    return buf.getvalue()


schemathesis.openapi.media_type("audio/wav", wav_files())
# The speech route's one-off reference clip: a WAV file in base64 inside the JSON body.
schemathesis.openapi.format("audio-base64",
                            wav_files().map(lambda data: base64.b64encode(data).decode()))


@schemathesis.check
def positive_data_accepted(ctx: CheckContext, response, case) -> bool | None:
    """Schema-valid requests get 2xx, or 422 only for an unpronounceable text."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 300 or status == 409:  # 409: the CUDA snapshot on a machine without CUDA
        return None
    error = response.json().get("error") if status >= 400 else None
    if isinstance(error, dict):  # the OpenAI-compatible routes' error shape
        if status == 404 and error.get("code") == "voice_not_found":
            return None  # a well-formed name that names no registered voice
        error = error.get("message")
        if status == 400 and NO_LETTERS in error:
            return None  # the speech schema cannot say "a letter of any script" (see there)
    if status in (400, 422) and error == UNPRONOUNCEABLE:
        return None
    raise AssertionError(f"valid request rejected with {status}: {response.text[:300]}")


#: Every operation of the description; a test below fails if the description has others.
OPERATIONS = ["GET /v1/health", "POST /v1/synthesize", "POST /v1/cleanup", "GET /v1/memory",
              "GET /v1/memory/snapshot", "GET /metrics", "HEAD /v1/health", "HEAD /v1/memory",
              "HEAD /v1/memory/snapshot", "HEAD /metrics",
              "POST /v1/audio/speech", "GET /v1/models", "HEAD /v1/models", "GET /v1/voices",
              "HEAD /v1/voices", "POST /v1/voices", "DELETE /v1/voices/{name}", "GET /health",
              "HEAD /health", "GET /ready", "HEAD /ready"]


@pytest.fixture(scope="module")
def api_schema(service):
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json", timeout=30)


def test_every_operation_is_exercised(api_schema) -> None:
    labels = [result.ok().label for result in api_schema.get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


#: Operations that take input (body or query) also get schema-invalid examples.
WITH_INPUT = ("POST /v1/synthesize", "POST /v1/cleanup", "POST /v1/audio/speech",
              "POST /v1/voices")
RUNS = [pytest.param(label, mode, id=f"{label}-{mode.value}") for label in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or label in WITH_INPUT]


@pytest.mark.parametrize(("label", "mode"), RUNS)
def test_openapi_no_server_error_no_schema_violation(api_schema, label: str,
                                                    mode: GenerationMode) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance],
                               additional_checks=[positive_data_accepted])

    run()
