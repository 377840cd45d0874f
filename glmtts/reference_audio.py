"""Reference (prompt) recordings for engines that clone a voice.

:func:`load_reference` turns a user's file into a validated :class:`ReferenceAudio`: mono float32
samples at the file's own rate, with a content id. Every way a file can be unusable (missing,
empty, too big, not audio, corrupt, silent, too short, too long) ends in a
:class:`ReferenceAudioError` whose message says what to do, never in a library traceback.

Formats: WAV, FLAC, OGG (Vorbis or Opus) and MP3, as far as the libsndfile under ``soundfile``
reads them (MP3 needs libsndfile 1.1 or newer; :func:`supported_formats` says what this machine
has).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glmtts.errors import InvalidRequestError
from glmtts.say import N_, Say

#: Shortest and longest reference accepted by default, in seconds. GLM-TTS turns the prompt into
#: 25 speech tokens per second and caps a prompt at 750 tokens: 30 s.
MIN_SECONDS = 2.0
MAX_SECONDS = 30.0
#: Largest file read, in bytes (checked before decoding). 30 s of 96 kHz stereo 32-bit float
#: is 23 MiB; anything bigger than this is not a short voice clip.
MAX_BYTES = 50 * 2**20
#: RMS level (linear, full scale = 1.0) below which a clip counts as silent: 0.001 = -60 dBFS.
#: Speech recorded at any usable level sits around -35 to -15 dBFS.
SILENCE_RMS = 1e-3
#: Formats accepted, by libsndfile's name; those this libsndfile lacks are left out at run time.
ACCEPTED_FORMATS = ("WAV", "FLAC", "OGG", "MP3")
#: Length of :meth:`ReferenceAudio.preview_wav` by default, in seconds.
PREVIEW_SECONDS = 5.0


class ReferenceAudioError(InvalidRequestError):
    """The reference recording cannot be used (the message says why and what to do)."""

    def __init__(self, message: str) -> None:
        super().__init__("reference_audio", message)


def supported_formats() -> tuple[str, ...]:
    """The accepted formats this machine's libsndfile can read (subset of
    :data:`ACCEPTED_FORMATS`)."""
    import soundfile as sf

    available = sf.available_formats()
    return tuple(f for f in ACCEPTED_FORMATS if f in available)


def _dbfs(rms: float) -> float:
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _size(n: int) -> str:
    if n < 2**10:
        return f"{n} bytes"
    if n < 2**20:
        return f"{n / 2**10:.1f} KiB"
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class ReferenceAudio:
    """A validated reference recording.

    Attributes:
        samples: Mono float32 samples (channels averaged), read-only, at ``sample_rate``.
        sample_rate: The file's own rate in Hz (nothing is resampled on loading).
        path: Absolute path of the file it came from.
        format: libsndfile's format name (``WAV``, ``FLAC``, ``OGG``, ``MP3``).
        channels: Channel count of the file (1 after the downmix, whatever this says).
        rms: Root-mean-square level of ``samples`` (linear, full scale = 1.0).
        content_id: 16 hex digits of SHA-256 over the sample rate and the mono samples: the
            same sound gives the same id whatever the file is called or which lossless
            container holds it; a different clip gives another id. Stable for one
            libsndfile version (lossy decoders may differ in the last bits between versions).
    """

    samples: np.ndarray = field(repr=False)
    sample_rate: int
    path: Path
    format: str
    channels: int
    rms: float
    content_id: str

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate

    @property
    def level_dbfs(self) -> float:
        """RMS level in dB relative to full scale."""
        return _dbfs(self.rms)

    def summary(self) -> str:
        """One line for the UI, e.g. ``"4.2 s · 44,100 Hz · stereo → mono · FLAC · -23 dBFS"``."""
        layout = N_("mono") if self.channels == 1 else Say("{count} channels → mono",
                                                           count=self.channels)
        if self.channels == 2:
            layout = N_("stereo → mono")
        return Say("{seconds} s · {rate} Hz · {layout} · {format} · {level} dBFS",
                   seconds=f"{self.duration_s:.1f}", rate=f"{self.sample_rate:,}",
                   layout=layout, format=self.format, level=f"{self.level_dbfs:.0f}")

    def resampled(self, sample_rate: int) -> np.ndarray:
        """The samples at ``sample_rate`` (band-limited windowed sinc,
        :func:`glmtts.audio.resample`); :attr:`samples` itself when the rate is already right."""
        if sample_rate == self.sample_rate:
            return self.samples
        import torch

        from glmtts.audio import resample

        out = resample(torch.from_numpy(np.array(self.samples)), self.sample_rate, sample_rate)
        return out.numpy().astype(np.float32, copy=False)

    def write_wav(self, path: str | Path, sample_rate: int | None = None, *,
                  seconds: float | None = None) -> Path:
        """Write the mono samples as 16-bit PCM WAV (optionally resampled, optionally only the
        first ``seconds``); return the path. Engines hand this file to code that reads WAV
        only."""
        from glmtts.audio import write_wav

        rate = sample_rate or self.sample_rate
        audio = self.resampled(rate)
        if seconds is not None:
            audio = audio[: max(0, round(seconds * rate))]
        return write_wav(path, audio, rate)

    def preview_wav(self, seconds: float = PREVIEW_SECONDS) -> bytes:
        """The first ``seconds`` as WAV bytes (for a player next to the upload)."""
        from glmtts.audio import wav_bytes

        return wav_bytes(self.samples[: max(0, round(seconds * self.sample_rate))],
                         self.sample_rate)

    def write_preview(self, path: str | Path, seconds: float = PREVIEW_SECONDS) -> Path:
        """Write :meth:`preview_wav` to ``path``; return the path."""
        return self.write_wav(path, seconds=seconds)


def _check_file(path: Path, max_bytes: int) -> int:
    if not path.exists():
        raise ReferenceAudioError(Say("the reference recording {path} does not exist",
                                      path=str(path)))
    if not path.is_file():
        raise ReferenceAudioError(Say("{path} is not a file: choose an audio file",
                                      path=str(path)))
    size = path.stat().st_size
    if size == 0:
        raise ReferenceAudioError(Say("the reference recording {name} is empty (0 bytes)",
                                      name=path.name))
    if size > max_bytes:
        raise ReferenceAudioError(Say(
            "the reference recording {name} is {size}; the limit is {limit}: upload a short "
            "clip ({low}-{high} s)", name=path.name, size=_size(size), limit=_size(max_bytes),
            low=f"{MIN_SECONDS:g}", high=f"{MAX_SECONDS:g}"))
    return size


def _open_info(path: Path) -> Any:
    """``soundfile.info(path)``, its failures turned into :class:`ReferenceAudioError`."""
    import soundfile as sf

    try:
        return sf.info(str(path))
    except sf.LibsndfileError as exc:
        formats = ", ".join(supported_formats())
        detail = exc.error_string
        if "not recognised" in detail.lower():
            if path.suffix.lower() == ".mp3" and "MP3" not in supported_formats():
                raise ReferenceAudioError(Say(
                    "{name} is not an audio file this app can read (this libsndfile {version} "
                    "cannot read MP3; 1.1 or newer can): use {formats}", name=path.name,
                    version=sf.__libsndfile_version__, formats=formats)) from None
            raise ReferenceAudioError(Say(
                "{name} is not an audio file this app can read: use {formats}",
                name=path.name, formats=formats)) from None
        raise ReferenceAudioError(Say(
            "{name} cannot be read: it is damaged, or not really audio (libsndfile: {detail}): "
            "export the clip again as {formats}", name=path.name, detail=detail.strip(),
            formats=formats)) from None


#: Largest sample rate and channel count a header may declare (beyond: a damaged or hostile
#: file, refused before decoding).
MAX_HEADER_RATE = 384_000
MAX_HEADER_CHANNELS = 16


def check_header(path: str | Path, *, max_s: float = MAX_SECONDS,
                 max_bytes: int = MAX_BYTES, slack_s: float = 0.0) -> Any:
    """The one reference-audio gate before any decoding (the page, batch lines and the HTTP
    service all pass through it): the file exists, is not empty or too big, is audio of an
    accepted format, its header is sane, and it is not longer than ``max_s`` (plus ``slack_s``
    for a caller that checks the decoded length again). Returns soundfile's header info.

    Raises:
        ReferenceAudioError: what is wrong, in one line.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    _check_file(path, max_bytes)
    info = _open_info(path)
    formats = supported_formats()
    if info.format not in formats:
        raise ReferenceAudioError(Say("{name} is {format} audio, which is not accepted: use "
                                      "{formats}", name=path.name, format=info.format,
                                      formats=", ".join(formats)))
    if not 0 < info.samplerate <= MAX_HEADER_RATE or not 0 < info.channels <= (
            MAX_HEADER_CHANNELS):
        raise ReferenceAudioError(Say("{name} has a broken header ({rate} Hz, {channels} "
                                      "channels)", name=path.name, rate=info.samplerate,
                                      channels=info.channels))
    if info.frames > 0 and info.frames / info.samplerate > max_s + slack_s:
        raise ReferenceAudioError(Say(
            "the reference recording is {seconds} s long; the limit is {high} s: trim it to "
            "{low}-{high} s of clear speech", seconds=f"{info.frames / info.samplerate:.1f}",
            high=f"{max_s:g}", low=f"{MIN_SECONDS:g}"))
    return info


def load_reference(path: str | Path, *, min_s: float = MIN_SECONDS,
                   max_s: float = MAX_SECONDS, max_bytes: int = MAX_BYTES,
                   silence_rms: float = SILENCE_RMS) -> ReferenceAudio:
    """Read and validate a reference recording.

    Args:
        path: WAV, FLAC, OGG or MP3 file.
        min_s: Shortest accepted duration in seconds.
        max_s: Longest accepted duration in seconds (checked on the header before decoding,
            and again on the decoded samples).
        max_bytes: Largest accepted file size (checked before reading anything).
        silence_rms: Clips whose mono RMS is below this (linear) are refused as silent.

    Raises:
        ReferenceAudioError: missing, not a file, empty, too big, not audio, another format,
            corrupt, no samples, NaN/infinite samples, too short, too long or silent.
    """
    import soundfile as sf

    path = Path(os.path.abspath(Path(path).expanduser()))
    info = check_header(path, max_s=max_s, max_bytes=max_bytes, slack_s=1.0)
    try:  # never more than the allowed duration is decoded (a header may understate it)
        data, rate = sf.read(str(path), dtype="float32", always_2d=True,
                             frames=int((max_s + 1.0) * info.samplerate) + 1)
    except sf.LibsndfileError as exc:
        raise ReferenceAudioError(Say("{name} is damaged and cannot be decoded ({detail}): "
                                      "export the clip again", name=path.name,
                                      detail=exc.error_string)) from None
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else (
        data[:, 0].copy())
    if len(mono) == 0:
        raise ReferenceAudioError(Say("{name} contains no audio (0 samples)", name=path.name))
    if not np.isfinite(mono).all():
        raise ReferenceAudioError(Say("{name} is damaged: it contains NaN or infinite "
                                      "samples", name=path.name))
    duration = len(mono) / rate
    if duration < min_s:
        raise ReferenceAudioError(Say(
            "the reference recording is {seconds} s long; it needs at least {low} s "
            "({low}-{high} s of clear speech)", seconds=f"{duration:.2f}", low=f"{min_s:g}",
            high=f"{max_s:g}"))
    if duration > max_s:
        raise ReferenceAudioError(Say(
            "the reference recording is {seconds} s long; the limit is {high} s: trim it to "
            "{low}-{high} s of clear speech", seconds=f"{duration:.1f}", high=f"{max_s:g}",
            low=f"{min_s:g}"))
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    if rms < silence_rms:
        levels = {"level": f"{_dbfs(rms):.1f}", "threshold": f"{_dbfs(silence_rms):.0f}",
                  "rms": f"{silence_rms:g}"}
        raise ReferenceAudioError(
            Say("the reference recording is silent after mixing its channels to mono: its RMS "
                "level is {level} dBFS, below the threshold of {threshold} dBFS (RMS {rms} of "
                "full scale)", **levels) if info.channels > 1 else
            Say("the reference recording is silent: its RMS level is {level} dBFS, below the "
                "threshold of {threshold} dBFS (RMS {rms} of full scale)", **levels))
    digest = hashlib.sha256(f"{rate}:".encode())
    digest.update(mono.tobytes())
    mono.setflags(write=False)
    return ReferenceAudio(samples=mono, sample_rate=int(rate), path=path, format=info.format,
                          channels=int(info.channels), rms=rms,
                          content_id=digest.hexdigest()[:16])


__all__ = ["ACCEPTED_FORMATS", "MAX_BYTES", "MAX_SECONDS", "MIN_SECONDS", "SILENCE_RMS",
           "ReferenceAudio", "ReferenceAudioError", "check_header", "load_reference",
           "supported_formats"]
