"""Log-mel spectrograms for the twin's prompt: 128 bins at 16 kHz for the speech tokenizer
(100 frames per second), 80 bins up to 8 kHz at the output rate for the flow's prompt
(50 frames per second)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

#: Samples per frame of the speech tokenizer's mel at 16 kHz (100 frames per second).
WHISPER_HOP = 160


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


@lru_cache(maxsize=8)
def _filterbank(n_mels: int, n_fft: int, sample_rate: int, fmax: float) -> torch.Tensor:
    """Triangular filters evenly spaced on the mel scale, ``(n_mels, n_fft // 2 + 1)``, each
    normalised to unit area (CPU, float32)."""
    mels = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights *= 2.0 / (upper - lower)
    return weights.float()


def log_mel(audio: torch.Tensor, sample_rate: int, *, n_mels: int, hop: int, n_fft: int,
            fmax: float) -> torch.Tensor:
    """Natural-log mel spectrogram of a 1-D signal: ``(n_mels, len(audio) // hop)``."""
    frames = max(1, audio.shape[-1] // hop)
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio.float(), n_fft, hop, n_fft, window, center=True,
                      return_complex=True)[:, :frames]
    power = spec.abs().pow(2)
    fb = _filterbank(n_mels, n_fft, sample_rate, fmax).to(audio.device)
    return torch.log(torch.clamp(fb @ power, min=1e-5))


def whisper_features(audio_16k: torch.Tensor) -> torch.Tensor:
    """The speech tokenizer's input: 128 log-mel bins at 100 frames per second, scaled the
    way whisper's front-end expects (``(n_mels=128, frames)``)."""
    mel = log_mel(audio_16k, 16000, n_mels=128, hop=WHISPER_HOP, n_fft=400, fmax=8000.0)
    mel = mel / math.log(10.0)
    mel = torch.maximum(mel, mel.max() - 8.0)
    return (mel + 4.0) / 4.0


def flow_prompt_mel(audio: torch.Tensor, sample_rate: int, hop: int) -> torch.Tensor:
    """The flow's prompt features: 80 log-mel bins up to 8 kHz, window = n_fft = 4 x hop,
    50 frames per second: ``(frames, 80)``."""
    return log_mel(audio, sample_rate, n_mels=80, hop=hop, n_fft=4 * hop, fmax=8000.0).T
