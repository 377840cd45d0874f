"""The piper engine against onnxruntime running the same voice, and as users run it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glmtts.engines.piper import phonemes
from glmtts.errors import EngineNotLoadedError
from glmtts.request import SynthesisRequest

SENTENCES = [
    "Hello there, how are you doing today?",
    "The quick brown fox jumps over the lazy dog while the old man watches from his porch.",
    "In the early years of the twentieth century, the small town by the river became a busy "
    "center of trade, and its market grew larger every single year.",
]


def ort_run(session, ids: list[int], scales: tuple[float, float, float]) -> np.ndarray:
    arr = np.array([ids], dtype=np.int64)
    out = session.run(None, {"input": arr, "input_lengths": np.array([arr.shape[1]]),
                             "scales": np.array(scales, dtype=np.float32)})[0]
    return out.reshape(-1)


@pytest.mark.parametrize("text", SENTENCES)
def test_module_matches_onnxruntime(piper_deterministic, ort_voice, text: str) -> None:
    cfg = piper_deterministic.config
    (sentence,) = phonemes.sentences(text, cfg.espeak_voice, cfg.id_map)
    expected = ort_run(ort_voice, list(sentence.ids), (0.0, 1.0, 0.0))
    with torch.inference_mode():
        ours = piper_deterministic._model(torch.tensor([sentence.ids]), noise_scale=0.0,
                                          noise_w=0.0).numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-4


def test_engine_speaks_real_audio(piper_engine, ort_voice) -> None:
    text = " ".join(SENTENCES)
    result = piper_engine.synthesize(SynthesisRequest(text=text, seed=7))
    cfg = piper_engine.config
    ref = [ort_run(ort_voice, list(s.ids), (cfg.noise_scale, 1.0, cfg.noise_w))
           for s in phonemes.sentences(text, cfg.espeak_voice, cfg.id_map)]
    from glmtts.engines.piper import SENTENCE_PAUSE_S

    ref_s = (sum(len(r) for r in ref) / cfg.sample_rate + SENTENCE_PAUSE_S * (len(ref) - 1))
    assert result.sample_rate == 22050
    assert result.audio.dtype == np.float32 and result.audio.ndim == 1
    assert abs(result.duration_s - ref_s) <= 0.2 * ref_s
    rms = float(np.sqrt(np.mean(result.audio**2)))
    assert rms > 0.01
    assert np.mean(np.abs(result.audio) >= 0.999) == 0.0, "clipped samples"
    assert result.metadata["sentences"] == 3
    assert set(result.timings) >= {"phonemize", "acoustic"}
    assert result.rtf is not None and result.rtf > 0


def test_sentences_joined_with_pauses(piper_engine) -> None:
    from glmtts.engines.piper import SENTENCE_PAUSE_S

    result = piper_engine.synthesize(SynthesisRequest(text="One. Two.", seed=1))
    silent = np.abs(result.audio) < 1e-6
    longest = max(len(run) for run in "".join("1" if s else "0" for s in silent).split("0"))
    assert longest >= int(SENTENCE_PAUSE_S * result.sample_rate)


def test_same_seed_same_samples(piper_engine) -> None:
    a = piper_engine.synthesize(SynthesisRequest(text=SENTENCES[1], seed=42))
    b = piper_engine.synthesize(SynthesisRequest(text=SENTENCES[1], seed=42))
    c = piper_engine.synthesize(SynthesisRequest(text=SENTENCES[1], seed=43))
    assert np.array_equal(a.audio, b.audio)
    assert a.metadata["seed"] == 42
    assert len(a.audio) != len(c.audio) or not np.array_equal(a.audio, c.audio)


def test_no_seed_reports_the_one_drawn(piper_engine) -> None:
    a = piper_engine.synthesize(SynthesisRequest(text="Repeat after me."))
    b = piper_engine.synthesize(SynthesisRequest(text="Repeat after me.",
                                                 seed=a.metadata["seed"]))
    assert np.array_equal(a.audio, b.audio)


@pytest.mark.parametrize("rate", [24000, 32000])
def test_resampled_output_length(piper_engine, rate: int) -> None:
    native = piper_engine.synthesize(SynthesisRequest(text=SENTENCES[0], seed=5))
    other = piper_engine.synthesize(SynthesisRequest(text=SENTENCES[0], seed=5,
                                                     sample_rate=rate))
    assert other.sample_rate == rate
    assert len(other.audio) == math.ceil(len(native.audio) * rate / 22050)
    assert abs(other.duration_s - native.duration_s) < 1e-3
    # Same content: the resampled signal keeps the native one's energy.
    assert abs(np.std(other.audio) - np.std(native.audio)) < 0.05 * np.std(native.audio)


def test_speed_changes_duration(piper_deterministic) -> None:
    slow = piper_deterministic.synthesize(SynthesisRequest(text=SENTENCES[1], speed=0.8))
    fast = piper_deterministic.synthesize(SynthesisRequest(text=SENTENCES[1], speed=1.25))
    # Durations are rounded up to whole frames per phoneme, so the ratio is below 1.25 / 0.8.
    assert slow.duration_s > 1.15 * fast.duration_s


def test_load_unload_cycle() -> None:
    from glmtts.engines import create_engine

    engine = create_engine("piper")
    with pytest.raises(EngineNotLoadedError):
        engine.synthesize(SynthesisRequest(text="hello"))
    engine.load("cpu")
    assert engine.loaded and engine.device == "cpu"
    assert 60_000_000 < engine.model_bytes() < 66_000_000  # 15.65 M float32 parameters
    engine.unload()
    assert not engine.loaded and engine.model_bytes() is None
    engine.unload()  # idempotent


def test_capabilities_declare_ignored_knobs(piper_engine) -> None:
    caps = piper_engine.capabilities
    assert caps.sample_rates == (22050, 24000, 32000)
    assert caps.reason("seed") is None and caps.reason("sample_rate") is None
    assert "KV" in caps.reason("use_kv_cache")
    assert caps.reason("reference_audio") and caps.reason("sampling_method")


@pytest.mark.gpu
def test_cuda_matches_cpu(piper_deterministic) -> None:
    from glmtts.engines import create_engine

    gpu = create_engine("piper", noise_scale=0.0, noise_w=0.0)
    gpu.load("cuda")
    try:
        req = SynthesisRequest(text=SENTENCES[1], seed=3)
        a = gpu.synthesize(req).audio
        b = piper_deterministic.synthesize(req).audio
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 2e-3
        assert np.array_equal(a, gpu.synthesize(req).audio)
    finally:
        gpu.unload()
