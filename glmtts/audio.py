"""Audio helpers: band-limited resampling (in torch, so it runs where the model runs),
joining sentences with pauses, and writing WAV files.

torch is imported by :func:`resample` only: the app's first page writes WAVs and imports this
module without paying for torch (about 1.5 s) before the first synthesis needs it."""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Zero crossings of the windowed sinc on each side: more is sharper and slower.
_ZERO_CROSSINGS = 24
#: Cut-off as a fraction of the lower Nyquist frequency (leaves room for the transition band).
_ROLLOFF = 0.94


@lru_cache(maxsize=16)
def _sinc_kernel(up: int, down: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc filters, one row per output phase: ``(up, 1, taps)``.

    Cached process-wide in host memory only (at most 16 rate pairs, a few hundred KiB each),
    shared by every session and never cleared by one: it holds no GPU memory, so no cleanup
    needs to drop it (:func:`resample` copies the kernel to the audio's device per call).

    Output sample ``n`` of phase ``p = n mod up`` lies at input position ``(n * down) / up``.
    For phase ``p`` and tap ``j`` the kernel weighs input sample ``floor(...) - pad + j``.
    """
    import torch

    cutoff = min(up, down) * _ROLLOFF  # in units where the input rate is ``down``
    pad = math.ceil(_ZERO_CROSSINGS * down / cutoff)
    taps = torch.arange(-pad, pad + down, dtype=torch.float64) / down
    phase = -torch.arange(up, dtype=torch.float64)[:, None] / up
    t = (taps[None, :] + phase) * cutoff
    t = t.clamp(-_ZERO_CROSSINGS, _ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / (2 * _ZERO_CROSSINGS)) ** 2
    arg = t * math.pi
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)
    kernel = sinc * window * (cutoff / down)
    return kernel[:, None, :].to(dtype=dtype), pad


def resample(audio: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of a 1-D signal by a rational factor (Hann-windowed sinc).

    The output has ``ceil(len * new_sr / orig_sr)`` samples. Content above ``0.94`` times the
    lower of the two Nyquist frequencies is removed, so downsampling does not alias.
    """
    if orig_sr == new_sr:
        return audio
    from torch.nn import functional as F

    g = math.gcd(orig_sr, new_sr)
    down, up = orig_sr // g, new_sr // g
    kernel, pad = _sinc_kernel(up, down, audio.dtype)
    kernel = kernel.to(audio.device, non_blocking=True)
    n = audio.shape[-1]
    x = F.pad(audio.reshape(1, 1, n), (pad, pad + down))
    y = F.conv1d(x, kernel, stride=down)  # (1, up, frames)
    out_len = math.ceil(n * up / down)
    return y[0].t().reshape(-1)[:out_len]


def join_with_pauses(chunks: list[np.ndarray], pauses_s: list[float], sample_rate: int
                     ) -> np.ndarray:
    """Concatenate ``chunks``, inserting ``pauses_s[i]`` seconds of silence after chunk ``i``
    (the pause after the last chunk is dropped)."""
    parts: list[np.ndarray] = []
    for i, chunk in enumerate(chunks):
        parts.append(chunk)
        if i < len(chunks) - 1:
            parts.append(np.zeros(round(pauses_s[i] * sample_rate), dtype=np.float32))
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(
        0, np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio as 16-bit PCM WAV; return the path."""

    path = Path(path)
    if path.is_dir():
        raise OSError(f"cannot write {path}: it is a folder; give a file name, e.g. "
                      f"{path / 'out.wav'}")
    data = wav_bytes(audio, sample_rate)  # encoded first: a write error is the disk's
    try:
        with path.open("wb") as out:
            out.write(data)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(f"cannot write {path}: {reason}") from None
    return path


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """The same WAV as :func:`write_wav`, in memory (for players and downloads)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()
