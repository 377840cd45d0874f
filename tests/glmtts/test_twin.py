"""The GLM-TTS memory twin on the CPU, at small scale: shapes, lengths, the two KV caches.

Host RSS is too coarse for differences of a few MiB, so memory here is counted exactly: a
dispatch mode (:class:`LiveTensorBytes`) sees every tensor a synthesis creates and keeps the
peak of the bytes alive at once, overall and per stage (forward hooks on the stages name the
current one).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from glmtts.engines import create_engine, engine_names, engine_status
from glmtts.engines.twin import TwinEngine
from glmtts.engines.twin.config import AUDIO_TOKEN_BASE, HOPS, TwinConfig
from glmtts.engines.twin.estimate import estimate_memory
from glmtts.engines.twin.llm import generate
from glmtts.engines.twin.model import build_model, parameter_counts
from glmtts.engines.twin.sampling import SpeechTokenSampler
from glmtts.engines.twin.text import (
    HISTORY_CAP_TOKENS,
    plan_segments,
    split_segments,
    text_token_ids,
)
from glmtts.request import SynthesisRequest

SCALE = 0.05
SHORT = "Hello there, how are you doing today?"
LONG = ("The bridge carried carts and cattle across the water. Merchants came every week with "
        "cloth, salt and iron tools. The market square filled with voices from dawn until "
        "dusk. Children gathered there in the evenings to watch the boats. When the railway "
        "finally reached the valley, everything changed for good. The merchants no longer "
        "needed the river at all, it seemed. The boats grew fewer with each passing season. "
        "The bridge became a quiet place where people walked to remember.")


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the CPU tensors created inside the mode that are alive, and their peak.

    Storages are counted once (views share them); a storage that an op's inputs already had
    (weights, caller's tensors) is not counted. ``stage`` names what runs now, and
    ``stage_peaks`` keeps the peak seen while each stage ran.
    """

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.current = self.peak = 0
        self.stage = "other"
        self.stage_peaks: dict[str, int] = {}

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.current -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            key = t.untyped_storage().data_ptr()
            if not key or (key in inputs and key not in self.refs):
                continue
            if key not in self.refs:
                self.refs[key] = 0
                self.sizes[key] = t.untyped_storage().nbytes()
                self.current += self.sizes[key]
            self.refs[key] += 1
            weakref.finalize(t, self._release, key)
        self.peak = max(self.peak, self.current)
        self.stage_peaks[self.stage] = max(self.stage_peaks.get(self.stage, 0), self.current)
        return out


@contextmanager
def counting(engine: TwinEngine):
    """Count live tensor bytes during the block, by stage of ``engine``'s model."""
    counter = LiveTensorBytes()
    model = engine._model
    stages = {"llm": model.llm, "flow": model.flow, "prompt_encoder": model.prompt_encoder,
              **{f"vocoder_{k}": v for k, v in model.vocoders.items()}}
    handles = []
    for name, module in stages.items():
        def enter(_module, _args, name=name):
            counter.stage = name

        def leave(_module, _args, _out):
            counter.stage = "other"

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with counter:
            yield counter
    finally:
        for handle in handles:
            handle.remove()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def twin() -> TwinEngine:
    engine = create_engine("twin", scale=SCALE)
    engine.load("cpu")
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def long_runs(twin):
    """The long text with the prompt-history switch off and on, and the short text: results
    and counters."""
    runs = {}
    for name, text, kv in (("short", SHORT, False), ("off", LONG, False), ("on", LONG, True)):
        with counting(twin) as counter:
            result = twin.synthesize(SynthesisRequest(text=text, use_kv_cache=kv, seed=5))
        runs[name] = (result, counter)
    return runs


# ---------------------------------------------------------------------- shapes
def test_full_size_parameter_counts_on_the_meta_device() -> None:
    counts = parameter_counts(1.0)
    assert counts["llm"] == 1_552_009_216
    assert abs(counts["flow"] - 225e6) / 225e6 < 0.05
    assert abs(counts["prompt_encoder"] - 365e6) / 365e6 < 0.05
    model = build_model(TwinConfig(), device="meta")
    assert all(p.is_meta for p in model.parameters())  # nothing allocated
    # Decoder count by hand: tied embedding + 28 x (q, k, v, o, 3 MLP, 2 norms) + final norm.
    layer = 2048 * 2048 * 2 + 2048 * 512 * 2 + 3 * 2048 * 6144 + 2 * 2048
    assert counts["llm"] == 98304 * 2048 + 28 * layer + 2048


def test_scaled_shapes_keep_vocabularies_and_sensible_heads() -> None:
    for scale in (0.02, 0.05, 0.1, 0.25, 0.5):
        c = TwinConfig.at_scale(scale)
        assert c.decoder.vocab == 98304 and c.encoder.codebook == 32768
        assert c.flow.text_vocab + 1 == 100001
        assert c.decoder.head_dim >= 16 and c.decoder.head_dim % 8 == 0
        assert c.decoder.heads == 4 * c.decoder.kv_heads
        assert c.decoder.hidden == c.decoder.heads * c.decoder.head_dim
    with pytest.raises(ValueError):
        TwinConfig.at_scale(0)


def test_registered_runs_anywhere_and_says_it_is_not_speech(twin) -> None:
    assert "twin" in engine_names()
    assert engine_status()["twin"] is None
    caps = twin.capabilities
    assert caps.speech is False
    assert caps.sample_rates == (24000, 32000)
    assert {"use_kv_cache", "sample_rate", "seed", "sampling_method",
            "reference_audio"} <= caps.honours
    assert caps.reason("voice")
    assert caps.attention_cache is True
    assert caps.attention_cache_bytes_per_token == TwinConfig.at_scale(
        SCALE).attention_cache_bytes_per_token(torch.float32)


# ---------------------------------------------------------------------- text and lengths
def test_segments_are_30_to_60_characters() -> None:
    segments = split_segments(LONG)
    assert len(segments) > 5
    assert all(30 <= len(s) <= 60 for s in segments), [len(s) for s in segments]
    assert " ".join(segments).split() == LONG.split()
    assert split_segments(SHORT) == [SHORT]
    assert all(len(s) <= 60 for s in split_segments("x" * 200 + " tail words here"))


def test_history_cap_holds_for_any_length() -> None:
    text = " ".join([LONG] * 4)
    plans = plan_segments(text, 12, 75, use_history=True)
    assert len(plans) > 25
    assert all(p.prompt_speech_tokens + p.new_tokens <= HISTORY_CAP_TOKENS for p in plans)
    assert plans[-1].history and plans[-1].history[0] > 0  # the oldest were dropped
    assert [p.history for p in plan_segments(text, 12, 75, use_history=False)] == [
        ()] * len(plans)


# ---------------------------------------------------------------------- synthesis
def test_peak_grows_with_text_length(long_runs) -> None:
    short, long = long_runs["short"], long_runs["off"]
    assert long[0].duration_s > 5 * short[0].duration_s
    assert long[1].peak > short[1].peak * 1.3


def test_prompt_history_makes_later_prompts_longer_and_the_peak_higher(long_runs) -> None:
    off, on = long_runs["off"], long_runs["on"]
    seg_off, seg_on = off[0].metadata["segments"], on[0].metadata["segments"]
    assert len(seg_off) == len(seg_on) > 5
    assert all(not s["history"] and s["prompt_speech_tokens"] == 75 for s in seg_off)
    inputs = [s["llm_input_tokens"] for s in seg_on]
    assert inputs[0] == seg_off[0]["llm_input_tokens"]
    assert inputs[3] > inputs[2] > inputs[1] > inputs[0]
    # What the switch changes is the LLM's working set; at this scale the vocoder's fixed
    # per-sample cost is close to it, so the whole synthesis peak moves less.
    assert on[1].stage_peaks["llm"] > 1.5 * off[1].stage_peaks["llm"]
    assert on[1].peak >= off[1].peak
    # Same forced lengths: the switch changes memory, not the audio's length.
    assert len(on[0].audio) == len(off[0].audio)


def test_history_cap_holds_in_a_synthesis(long_runs) -> None:
    segments = long_runs["on"][0].metadata["segments"]
    assert all(s["prompt_speech_tokens"] + s["new_tokens"] <= HISTORY_CAP_TOKENS
               for s in segments)
    assert any(s["history"] and s["history"][0] > 0 for s in segments)  # pruned
    assert max(s["prompt_speech_tokens"] + s["new_tokens"] for s in segments) > 600


def test_32k_branch_returns_32000_hz_of_the_expected_length(twin) -> None:
    request = SynthesisRequest(text=SHORT, sample_rate=32000, seed=1)
    result = twin.synthesize(request)
    new_tokens = sum(s["new_tokens"] for s in result.metadata["segments"])
    assert result.sample_rate == 32000
    assert len(result.audio) == new_tokens * 2 * HOPS[32000]
    assert 2.0 < result.duration_s < 3.5  # 37 characters at ~14.5 per second
    assert result.audio.dtype == np.float32 and np.abs(result.audio).max() <= 1.0
    at24 = twin.synthesize(SynthesisRequest(text=SHORT, sample_rate=24000, seed=1))
    assert len(at24.audio) == new_tokens * 2 * HOPS[24000]


def test_attention_cache_bytes_per_token_measured_on_its_tensors() -> None:
    for dtype, itemsize in (("fp32", 4), ("bf16", 2)):
        engine = TwinEngine(scale=0.02, dtype=dtype)
        engine.load("cpu")
        result = engine.synthesize(SynthesisRequest(text=SHORT, seed=2))
        d = engine.config.decoder
        expected = 2 * d.layers * d.kv_heads * d.head_dim * itemsize
        (segment,) = result.metadata["segments"]
        assert segment["attention_cache_bytes"] == (
            expected * segment["attention_cache_tokens"])
        assert segment["attention_cache_tokens"] == (
            segment["llm_input_tokens"] + segment["new_tokens"])
        cache = engine._model.llm.new_cache(100)
        assert cache.bytes_per_token == expected
        engine.unload()


def test_attention_cache_off_recomputes_to_the_same_tokens() -> None:
    config = TwinConfig.at_scale(0.02)
    decoder = build_model(config, device="cpu", seed=3).llm
    prompt = torch.randint(0, 98304, (1, 40), generator=torch.Generator().manual_seed(0))
    rows = slice(AUDIO_TOKEN_BASE, AUDIO_TOKEN_BASE + 32768)
    tokens = {}
    with torch.inference_mode():
        for on in (True, False):
            sampler = SpeechTokenSampler("ras", torch.Generator().manual_seed(7))
            tokens[on] = generate(decoder, prompt, 60, sampler, rows=rows, attention_cache=on)
    assert tokens[True] == tokens[False]
    assert len(set(tokens[True])) > 30
    # Through the engine: same tokens, and no cache tensors when off.
    results = {}
    for on in (True, False):
        engine = TwinEngine(scale=0.02, attention_cache=on)
        engine.load("cpu")
        results[on] = engine.synthesize(SynthesisRequest(text=SHORT, seed=11)).metadata
        engine.unload()
    assert results[True]["speech_tokens"] == results[False]["speech_tokens"]
    assert results[False]["attention_cache"] is False
    assert "attention_cache_bytes" not in results[False]["segments"][0]


def test_seed_and_sampling_method_are_honoured(twin) -> None:
    def tokens(seed: int, method: str) -> list[int]:
        request = SynthesisRequest(text=SHORT, seed=seed, sampling_method=method)
        return twin.synthesize(request).metadata["speech_tokens"]

    ras = tokens(3, "ras")
    assert ras == tokens(3, "ras")
    assert ras != tokens(4, "ras")
    assert ras != tokens(3, "topk")
    assert all(0 <= t < 32768 for t in ras)


def test_reference_audio_sizes_the_prompt(twin, tmp_path: Path) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    path = tmp_path / "ref.wav"
    sf.write(path, 0.2 * rng.standard_normal((4 * 44100, 2)).astype(np.float32), 44100)
    request = SynthesisRequest(text=SHORT, reference_audio=path, reference_text="Four "
                               "seconds of a reference voice, read aloud.", seed=1)
    result = twin.synthesize(request)
    assert result.metadata["prompt_seconds"] == pytest.approx(4.0)
    assert result.metadata["prompt_speech_tokens"] == 100  # 25 per second
    assert twin.plan(request)[0].prompt_speech_tokens == 100


def test_estimate_follows_the_switches_and_full_size() -> None:
    text = " ".join([LONG] * 2)
    full = TwinConfig()
    plans = {kv: plan_segments(text, 12, 75, use_history=kv) for kv in (False, True)}
    off = estimate_memory(full, torch.float32, plans[False], 24000)
    on = estimate_memory(full, torch.float32, plans[True], 24000)
    assert on.total_bytes - off.total_bytes > 100 * 2**20  # history: long prefills + cache
    assert 8.0 * 2**30 < on.weights_bytes < 8.2 * 2**30
    half = estimate_memory(full, torch.bfloat16, plans[True], 24000)
    assert half.weights_bytes * 2 == on.weights_bytes
    no_cache = estimate_memory(full, torch.float32, plans[True], 24000, attention_cache=False)
    assert no_cache.attention_cache_bytes == 0
    assert text_token_ids("hello") == text_token_ids("hello")
