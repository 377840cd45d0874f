"""The ``glm-tts`` engine: drives a user's upstream GLM-TTS checkout (zai-org/GLM-TTS) and its
weights for zero-shot voice cloning. Configure it with ``GLMTTS_HOME`` or ``home=``; see
:mod:`glmtts.engines.glm_tts.checkout` for the expected layout and
:mod:`glmtts.engines.glm_tts.engine` for what each request does."""

from glmtts.engines.glm_tts.checkout import (
    HOME_ENV,
    VOCODERS,
    available_rates,
    checkout_problem,
    configured_home,
)
from glmtts.engines.glm_tts.engine import (
    SPEAKER_ENCODER,
    GlmTtsEngine,
    SampleRateSwitch,
)
from glmtts.engines.glm_tts.errors import CheckoutError, UpstreamError

__all__ = ["HOME_ENV", "SPEAKER_ENCODER", "VOCODERS", "CheckoutError", "GlmTtsEngine",
           "SampleRateSwitch", "UpstreamError", "available_rates", "checkout_problem",
           "configured_home"]
