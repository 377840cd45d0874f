"""Audio output formats of the OpenAI-compatible speech route, written by the installed
libsndfile (python-soundfile): which of them this machine can write is asked at run time.

``pcm`` is raw signed 16-bit little-endian mono samples with no header (OpenAI's ``pcm``); its
rate travels in the ``X-Sample-Rate`` response header.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OutputFormat:
    """One ``response_format``: how libsndfile writes it, and what it can carry.

    Attributes:
        name: The OpenAI name (``wav``, ``mp3``...).
        media_type: The response's ``Content-Type``.
        container: libsndfile's major format (``WAV``, ``RAW``...).
        subtype: libsndfile's subtype (``PCM_16``, ``OPUS``...).
        rates: Sample rates the codec accepts (empty: any).
        preferred_rate: The rate to ask the engine for when it can deliver it (``pcm`` clients
            expect 24 kHz, Opus has no 22,050 Hz); None: the engine's own rate.
    """

    name: str
    media_type: str
    container: str
    subtype: str
    rates: tuple[int, ...] = ()
    preferred_rate: int | None = None


#: Every format the route knows, in OpenAI's order of its docs; ``aac`` has no libsndfile
#: writer, so it is always refused with the list of those this machine has.
FORMATS = {f.name: f for f in (
    OutputFormat("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III",
                 rates=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    OutputFormat("opus", "audio/ogg", "OGG", "OPUS", rates=(8000, 12000, 16000, 24000, 48000),
                 preferred_rate=24000),
    OutputFormat("flac", "audio/flac", "FLAC", "PCM_16"),
    OutputFormat("wav", "audio/wav", "WAV", "PCM_16"),
    OutputFormat("pcm", "audio/pcm", "RAW", "PCM_16", preferred_rate=24000),
)}
#: What OpenAI offers that libsndfile cannot write (named in the refusal).
UNWRITABLE = ("aac",)


def available_formats() -> dict[str, OutputFormat]:
    """The formats this machine's libsndfile can write (name -> format)."""
    import soundfile as sf

    majors = sf.available_formats()
    out = {}
    for name, fmt in FORMATS.items():
        if fmt.container in majors and fmt.subtype in sf.available_subtypes(fmt.container):
            out[name] = fmt
    return out


def output_rate(fmt: OutputFormat, native: int, offered: tuple[int, ...]) -> tuple[int, int]:
    """``(rate to ask the engine for, rate to write)`` for ``fmt``, given the engine's own
    rate and the rates it can deliver: the format's preferred rate when the engine offers it,
    else the engine's own rate, else (a codec that cannot take it) the nearest rate the codec
    takes, resampled here."""
    if fmt.preferred_rate is not None and fmt.preferred_rate in offered:
        return fmt.preferred_rate, fmt.preferred_rate
    if not fmt.rates or native in fmt.rates:
        return native, native
    usable = [r for r in offered if r in fmt.rates]
    if usable:
        return usable[0], usable[0]
    return native, min(fmt.rates, key=lambda r: (abs(r - native), r))


def encode(audio: np.ndarray, rate: int, fmt: OutputFormat, write_rate: int | None = None
           ) -> bytes:
    """``audio`` (mono float in [-1, 1] at ``rate``) as ``fmt``'s bytes, resampled to
    ``write_rate`` first when that differs."""
    import soundfile as sf

    samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    if write_rate is not None and write_rate != rate:
        import torch

        from glmtts.audio import resample

        samples = resample(torch.from_numpy(samples), rate, write_rate).numpy()
        rate = write_rate
    if fmt.container == "RAW":
        return pcm16(samples)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt.container, subtype=fmt.subtype)
    return buf.getvalue()


def pcm16(audio: np.ndarray) -> bytes:
    """Signed 16-bit little-endian samples of mono float ``audio`` (no header), converted by
    libsndfile as its WAV writer converts them (the same samples as the service's WAVs)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), 8000,
             format="RAW", subtype="PCM_16", endian="LITTLE")
    return buf.getvalue()


#: Formats a speech stream carries piece by piece (the others go out whole once made).
STREAMABLE = ("pcm", "wav")


def wav_stream_header(rate: int) -> bytes:
    """The 44-byte header of a 16-bit mono WAV whose length is not known yet: the RIFF and
    data sizes say 0xFFFFFFFF (read as "until the end"), as streaming servers write it."""
    import struct

    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))
