"""The TTS side of the app: engines, requests and results, the synthesis session, the CLI.

Nothing here imports Streamlit; ``glmtts.engines`` does not import ``monitoring`` either.
"""

from glmtts.errors import (
    DeviceUnavailableError,
    EngineNotLoadedError,
    GlmTtsError,
    InvalidRequestError,
    UnknownEngineError,
    VoiceError,
)
from glmtts.request import MAX_TEXT_CHARS, SynthesisRequest, SynthesisResult

__all__ = [
    "MAX_TEXT_CHARS",
    "DeviceUnavailableError",
    "EngineNotLoadedError",
    "GlmTtsError",
    "InvalidRequestError",
    "SynthesisRequest",
    "SynthesisResult",
    "UnknownEngineError",
    "VoiceError",
]
