"""The pieces of a loaded GLM-TTS (see :mod:`glmtts.engines.glm_tts.engine`): the five parts
``load_models`` returns, what a sample-rate switch did, and how upstream's failures are turned
into typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from glmtts.engines.glm_tts.errors import UpstreamError
from glmtts.errors import GlmTtsError, is_out_of_memory

#: Upstream's prompt-mel settings per output rate (``glmtts_inference.load_frontends``): 80 mels,
#: 0-8000 Hz, 50 frames per second at both rates.
MEL_SETTINGS: dict[int, dict[str, Any]] = {
    24000: {"n_fft": 1920, "hop_size": 480, "win_size": 1920},
    32000: {"n_fft": 2560, "hop_size": 640, "win_size": 2560},
}
_MEL_COMMON = {"num_mels": 80, "fmin": 0, "fmax": 8000, "center": False}


@dataclass(frozen=True)
class SampleRateSwitch:
    """What one switch of the vocoder side cost.

    Attributes:
        from_rate: Rate the vocoder was loaded for before.
        to_rate: Rate it is loaded for now.
        seconds: Wall time of the switch (drop old vocoder, reset caches, load new vocoder).
        mel_cache_entries_dropped: Tensors removed from upstream's ``mel_basis`` and
            ``hann_window`` globals.
    """

    from_rate: int
    to_rate: int
    seconds: float
    mel_cache_entries_dropped: int


class _Parts:
    """The five components ``load_models`` returns (the engine holds the only references)."""

    __slots__ = ("frontend", "llm", "speech_tokenizer", "text_frontend", "token2wav")

    def __init__(self, frontend: Any, text_frontend: Any, speech_tokenizer: Any, llm: Any,
                 token2wav: Any) -> None:
        self.frontend = frontend
        self.text_frontend = text_frontend
        self.speech_tokenizer = speech_tokenizer
        self.llm = llm
        self.token2wav = token2wav

    def all(self) -> tuple[Any, ...]:
        return (self.frontend, self.text_frontend, self.speech_tokenizer, self.llm,
                self.token2wav)


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Turn an upstream failure into :class:`UpstreamError` naming the step; out-of-memory
    errors and our own typed errors pass through unchanged (the session recovers from OOM)."""
    try:
        yield
    except GlmTtsError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise UpstreamError(f"GLM-TTS failed while {what}: {type(exc).__name__}: {exc}"
                            ) from exc


@contextmanager
def _cudnn_flags_kept() -> Iterator[None]:
    """Upstream's ``set_seed`` sets ``cudnn.deterministic`` / ``benchmark`` for the whole
    process; put them back afterwards so other engines keep theirs."""
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


def non_torch_parts(parts: _Parts | None, speaker_encoder: str) -> dict[str, Any]:
    """Which parts hold memory outside PyTorch, from the speaker encoder's providers."""
    session = getattr(parts.frontend if parts else None, "campplus_session", None)
    providers = list(session.get_providers()) if session is not None else []
    on_gpu = any(p != "CPUExecutionProvider" for p in providers)
    return {"non_torch_parts": [speaker_encoder] if on_gpu else [],
            "host_non_torch_parts": [] if on_gpu else [speaker_encoder],
            "speaker_encoder_providers": providers}
