"""The ``glm-tts`` engine: drives a user's upstream GLM-TTS checkout (zai-org/GLM-TTS) and its
weights for zero-shot voice cloning. Configure it with ``GLMTTS_HOME`` or ``home=``; see
:mod:`glmtts.engines.glm_tts.checkout` for the expected layout and
:mod:`glmtts.engines.glm_tts.engine` for what each request does."""

from typing import TYPE_CHECKING, Any

from glmtts.engines.glm_tts.checkout import (
    HOME_ENV,
    VOCODERS,
    available_rates,
    checkout_problem,
    configured_home,
    engine_problem,
)
from glmtts.engines.glm_tts.errors import CheckoutError, UpstreamError

if TYPE_CHECKING:
    from glmtts.engines.glm_tts.engine import SPEAKER_ENCODER, GlmTtsEngine, SampleRateSwitch

#: Imported on first use: the engine module imports torch, the checkout checks do not.
_FROM_ENGINE = ("SPEAKER_ENCODER", "GlmTtsEngine", "SampleRateSwitch")


def __getattr__(name: str) -> Any:
    if name in _FROM_ENGINE:
        from glmtts.engines.glm_tts import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HOME_ENV", "SPEAKER_ENCODER", "VOCODERS", "CheckoutError", "GlmTtsEngine",
           "SampleRateSwitch", "UpstreamError", "available_rates", "checkout_problem",
           "configured_home", "engine_problem"]
