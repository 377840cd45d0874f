"""The TTS side of the app: engines, requests and results, the synthesis session, the CLI.

Nothing here imports Streamlit; ``glmtts.engines`` does not import ``monitoring`` either.
Public names are imported on first use (PEP 562): importing ``glmtts`` (or ``glmtts.worker``,
which an engine worker does under another interpreter, possibly without numpy) loads nothing.
"""

import importlib
from typing import Any

_WHERE = {
    "MAX_TEXT_CHARS": "glmtts.request",
    "SynthesisRequest": "glmtts.request",
    "SynthesisResult": "glmtts.request",
    "DeviceUnavailableError": "glmtts.errors",
    "EngineNotLoadedError": "glmtts.errors",
    "GlmTtsError": "glmtts.errors",
    "InvalidRequestError": "glmtts.errors",
    "UnknownEngineError": "glmtts.errors",
    "VoiceError": "glmtts.errors",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'glmtts' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


__all__ = sorted(_WHERE)
