"""Reference recordings: good files in every supported format round-trip, every bad file gets a
typed error with a message that says what is wrong, never a library traceback."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmtts.errors import InvalidRequestError
from glmtts.reference_audio import (
    MAX_SECONDS,
    SILENCE_RMS,
    ReferenceAudio,
    ReferenceAudioError,
    load_reference,
    supported_formats,
)

RATE = 24000


def voiced(seconds: float, rate: int = RATE, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """Speech-like: five harmonics of a gliding f0 under a 4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.25 * tone * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


FORMATS = [  # (libsndfile format, subtype, suffix, lossless)
    ("WAV", "PCM_16", ".wav", True),
    ("FLAC", "PCM_16", ".flac", True),
    ("OGG", "VORBIS", ".ogg", False),
    ("MP3", "MPEG_LAYER_III", ".mp3", False),
]


def test_supported_formats_follow_libsndfile() -> None:
    formats = supported_formats()
    assert {"WAV", "FLAC", "OGG"} <= set(formats)
    version = tuple(int(p) for p in sf.__libsndfile_version__.split(".")[:2])
    assert ("MP3" in formats) == (version >= (1, 1) and "MP3" in sf.available_formats())


@pytest.mark.parametrize(("fmt", "subtype", "suffix", "lossless"), FORMATS,
                         ids=[f[0] for f in FORMATS])
def test_good_file_round_trips(tmp_path: Path, fmt: str, subtype: str, suffix: str,
                               lossless: bool) -> None:
    if fmt not in supported_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot read {fmt}")
    signal = voiced(3.0)
    path = tmp_path / f"voice{suffix}"
    sf.write(path, signal, RATE, format=fmt, subtype=subtype)
    ref = load_reference(path)
    assert isinstance(ref, ReferenceAudio)
    assert ref.format == fmt and ref.sample_rate == RATE and ref.channels == 1
    assert ref.path == path and ref.samples.dtype == np.float32 and ref.samples.ndim == 1
    assert not ref.samples.flags.writeable
    assert abs(ref.duration_s - 3.0) < 0.06
    if lossless:
        np.testing.assert_allclose(ref.samples, signal, atol=1.5 / 32768)
    else:
        assert abs(ref.rms / float(np.sqrt(np.mean(signal**2))) - 1) < 0.15
        assert abs(dominant_hz(ref.samples, RATE) - dominant_hz(signal, RATE)) < 10
    assert len(ref.content_id) == 16 and int(ref.content_id, 16) >= 0
    assert -30 < ref.level_dbfs < -5 and "3.0 s" in ref.summary() and fmt in ref.summary()


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left, right = voiced(2.5, 44100, f0=120), voiced(2.5, 44100, f0=200, seed=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    ref = load_reference(path)
    assert ref.channels == 2 and ref.sample_rate == 44100
    np.testing.assert_allclose(ref.samples, (left + right) / 2, atol=1e-6)
    assert "stereo → mono" in ref.summary()


def test_content_id_is_the_sound_not_the_file(tmp_path: Path) -> None:
    # Integer samples: libsndfile's WAV and FLAC writers round floats differently.
    signal = np.round(voiced(2.5) * 32767).astype(np.int16)
    sf.write(tmp_path / "a.wav", signal, RATE, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", signal, RATE, subtype="PCM_16")
    sf.write(tmp_path / "c.wav", voiced(2.5, f0=180), RATE, subtype="PCM_16")
    a, b, c = (load_reference(tmp_path / n) for n in ("a.wav", "b.flac", "c.wav"))
    assert a.content_id == b.content_id != c.content_id
    assert load_reference(tmp_path / "a.wav").content_id == a.content_id  # stable


def test_resample_and_preview(tmp_path: Path) -> None:
    sf.write(tmp_path / "v.wav", voiced(6.0, rate=44100), 44100)
    ref = load_reference(tmp_path / "v.wav")
    at16 = ref.resampled(16000)
    assert at16.dtype == np.float32 and len(at16) == 96000
    assert abs(dominant_hz(at16, 16000) - dominant_hz(np.array(ref.samples), 44100)) < 5
    assert ref.resampled(44100) is ref.samples
    preview = ref.write_preview(tmp_path / "preview.wav", seconds=2.0)
    info = sf.info(preview)
    assert info.samplerate == 44100 and info.frames == 88200 and info.subtype == "PCM_16"
    assert ref.preview_wav(1.0)[:4] == b"RIFF"
    written = ref.write_wav(tmp_path / "prompt.wav", 24000)
    assert sf.info(written).samplerate == 24000 and sf.info(written).channels == 1


def test_relative_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sf.write(tmp_path / "v.wav", voiced(2.5), RATE)
    monkeypatch.chdir(tmp_path)
    assert load_reference("v.wav").path == tmp_path / "v.wav"


# --------------------------------------------------------------------------- bad files
def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _empty_wav(path: Path) -> Path:
    sf.write(path, np.zeros(0, np.float32), RATE)
    return path


def _nan_wav(path: Path) -> Path:
    x = voiced(3.0)
    x[1000] = np.nan
    sf.write(path, x, RATE, subtype="FLOAT")
    return path


def _riff_garbage(path: Path) -> Path:
    rng = np.random.default_rng(1)
    return _write_bytes(path, b"RIFF" + struct.pack("<I", 4036) + b"WAVEfmt "
                        + rng.bytes(4028))


def _corrupt_flac(path: Path) -> Path:
    sf.write(path, voiced(3.0), RATE, format="FLAC")
    data = bytearray(path.read_bytes())
    data[200:2000] = np.random.default_rng(2).bytes(1800)
    return _write_bytes(path, bytes(data))


def _aiff(path: Path) -> Path:
    sf.write(path, voiced(3.0), RATE, format="AIFF")
    return path


def _tone(seconds: float, level: float = 1.0):
    def make(path: Path) -> Path:
        sf.write(path, voiced(seconds) * level, RATE)
        return path
    return make


def _quiet_noise(path: Path) -> Path:  # -70 dBFS: below the -60 dBFS threshold
    noise = np.random.default_rng(3).standard_normal(RATE * 3) * 10 ** (-70 / 20)
    sf.write(path, noise.astype(np.float32), RATE, subtype="FLOAT")
    return path


def _cancelling_stereo(path: Path) -> Path:
    x = voiced(3.0)
    sf.write(path, np.stack([x, -x], axis=1), RATE, subtype="FLOAT")
    return path


BAD = {  # name -> (file maker, words the message must contain)
    "missing": (lambda p: p, "does not exist"),
    "directory": (lambda p: (p.mkdir(), p)[1], "not a file"),
    "empty (0 bytes)": (lambda p: _write_bytes(p, b""), "empty (0 bytes)"),
    "text file": (lambda p: _write_bytes(p, b"just some words\n" * 200), "not an audio file"),
    "png image": (lambda p: _write_bytes(p, b"\x89PNG\r\n\x1a\n" + bytes(3000)),
                  "not an audio file"),
    "text named .mp3": (lambda p: _write_bytes(p.with_suffix(".mp3"), b"just words\n" * 300),
                        "damaged, or not really audio"),
    "corrupt WAV header": (_riff_garbage, "damaged"),
    "corrupt FLAC": (_corrupt_flac, "damaged"),
    "no samples": (_empty_wav, "no audio (0 samples)"),
    "NaN samples": (_nan_wav, "NaN"),
    "AIFF": (_aiff, "AIFF audio, which is not accepted"),
    "digital silence": (_tone(3.0, 0.0), "silent"),
    "near silence": (_quiet_noise, "-60 dBFS"),
    "channels cancel": (_cancelling_stereo, "after mixing its channels to mono"),
    "too short": (_tone(1.0), "needs at least 2 s"),
    "too long": (_tone(31.0), "the limit is 30 s"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_file_gets_a_typed_error(tmp_path: Path, name: str) -> None:
    make, words = BAD[name]
    path = make(tmp_path / ("clip.flac" if "FLAC" in name else "clip.wav"))
    with pytest.raises(ReferenceAudioError) as info:
        load_reference(path)
    assert isinstance(info.value, InvalidRequestError)
    assert info.value.field == "reference_audio"
    assert words in str(info.value)
    assert info.value.__cause__ is None  # no library traceback chained to the message


def test_silence_message_states_the_threshold(tmp_path: Path) -> None:
    with pytest.raises(ReferenceAudioError) as info:
        load_reference(_tone(3.0, 0.0)(tmp_path / "s.wav"))
    assert SILENCE_RMS == 1e-3
    assert "below the threshold of -60 dBFS (RMS 0.001 of full scale)" in str(info.value)


def test_too_big_is_refused_before_reading(tmp_path: Path) -> None:
    path = _tone(3.0)(tmp_path / "big.wav")
    with pytest.raises(ReferenceAudioError, match=r"140\.7 KiB; the limit is 1000 bytes"):
        load_reference(path, max_bytes=1000)


def test_too_long_header_is_refused_before_decoding(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = _tone(MAX_SECONDS + 5)(tmp_path / "long.wav")
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("decoded a too-long file"))
    with pytest.raises(ReferenceAudioError, match=r"35\.0 s long"):
        load_reference(path)


def test_limits_are_parameters(tmp_path: Path) -> None:
    path = _tone(3.0)(tmp_path / "v.wav")
    assert load_reference(path, min_s=0.5, max_s=4.0).duration_s == pytest.approx(3.0)
    with pytest.raises(ReferenceAudioError, match=r"limit is 2\.5 s"):
        load_reference(path, max_s=2.5)
    with pytest.raises(ReferenceAudioError, match="at least 5 s"):
        load_reference(path, min_s=5.0)


_VALID_WAV: bytes | None = None


def _valid_wav_bytes() -> bytes:
    global _VALID_WAV
    if _VALID_WAV is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "v.wav"
            sf.write(path, voiced(2.2, rate=8000), 8000, subtype="PCM_16")
            _VALID_WAV = path.read_bytes()
    return _VALID_WAV


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, 40000), flips=st.lists(st.tuples(st.integers(0, 200),
                                                              st.integers(0, 255)), max_size=6))
def test_damaged_wav_never_escapes_as_a_library_error(cut: int, flips: list[tuple[int, int]]
                                                      ) -> None:
    data = bytearray(_valid_wav_bytes()[: max(cut, 0) or None])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    fd, name = tempfile.mkstemp(suffix=".wav")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))
        try:
            ref = load_reference(name)
        except ReferenceAudioError as exc:
            assert exc.field == "reference_audio" and str(exc)
        else:
            assert 2.0 <= ref.duration_s <= 30.0 and np.isfinite(ref.samples).all()
    finally:
        os.unlink(name)
