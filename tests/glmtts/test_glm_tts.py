"""Contract tests of the ``glm-tts`` adapter against a stand-in of upstream GLM-TTS.

The real checkout needs ~8 GB of weights and a CUDA GPU, which cannot exist here; the stand-in
(``upstream_standin.py``, written into a temporary folder by each test) has upstream's layout,
module names and the signatures the adapter calls at revision c5dc7ae, with tiny CPU tensors,
and records every call it receives. ``REQUIRES_CUDA`` and the package check are turned off for
it. The integration test with a real checkout is ``test_glm_tts_integration.py``.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import sys
import weakref
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from glmtts.engines import create_engine, engine_status
from glmtts.engines.glm_tts import (
    SPEAKER_ENCODER,
    CheckoutError,
    GlmTtsEngine,
    SampleRateSwitch,
    UpstreamError,
    checkout_problem,
)
from glmtts.engines.glm_tts import checkout as checkout_mod
from glmtts.engines.glm_tts import engine as engine_mod
from glmtts.engines.glm_tts.precision import weights_estimate
from glmtts.engines.glm_tts.upstream import loaded_checkouts
from glmtts.errors import DeviceUnavailableError, DtypeUnsupportedError, InvalidRequestError
from glmtts.reference_audio import ReferenceAudioError
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession


def _load_helper(name: str) -> ModuleType:
    """Import a helper module of this folder by path (works in every pytest import mode)."""
    spec = importlib.util.spec_from_file_location(f"glmtts_tests_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standin = _load_helper("upstream_standin")
PROMPT_TEXT = "I wonder if you'd like to have a burger with me."
LONG_TEXT = ("The first sentence is here and it is long enough. The second one follows it "
             "closely. Then a third sentence closes the paragraph for good.")
#: Speech tokenizer, LLM (its projection and its llama), flow (gain, offset, speaker Linear),
#: vocoder, all fp32 (see upstream_standin.py).
STANDIN_WEIGHT_BYTES = 4 * (16 * 4 + 4 + 2 * (8 * 8 + 8) + 80 + 80 + 192 * 80 + 80 + 4)


def _under(root: Path) -> list[str]:
    prefix = str(root)
    out = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        paths = getattr(module, "__path__", None)
        paths = [str(p) for p in paths] if isinstance(paths, list) or type(paths).__name__ == (
            "_NamespacePath") else []
        if str(file).startswith(prefix) or any(p.startswith(prefix) for p in paths):
            out.append(name)
    return out


@pytest.fixture(autouse=True)
def no_leaks(tmp_path: Path):
    """Every test leaves cwd, sys.path and sys.modules as it found them."""
    cwd, path = os.getcwd(), list(sys.path)
    yield
    assert os.getcwd() == cwd
    assert sys.path == path
    assert _under(tmp_path) == []
    assert loaded_checkouts() == {}


@pytest.fixture
def cpu_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in runs on the CPU and imports none of upstream's dependencies."""
    monkeypatch.setattr(checkout_mod, "REQUIRES_CUDA", False)
    monkeypatch.setattr(checkout_mod, "UPSTREAM_PACKAGES", {})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return standin.write_standin(tmp_path / "GLM-TTS")


@pytest.fixture
def prompt(tmp_path: Path) -> Path:
    path = tmp_path / "prompt.wav"
    sf.write(path, standin.voiced(3.0, 24000), 24000)
    return path


@pytest.fixture
def engine(home: Path, cpu_upstream: None):
    e = GlmTtsEngine(home=home)
    yield e
    e.unload()


def req(prompt: Path, text: str = "If you need anything, come to Joey.", **kw) -> SynthesisRequest:
    kw.setdefault("seed", 7)
    kw.setdefault("reference_text", PROMPT_TEXT)
    return SynthesisRequest(text=text, reference_audio=prompt, **kw)


def steps(home: Path, name: str | None = None) -> list[dict]:
    calls = standin.read_calls(home)
    return [c for c in calls if c["step"] == name] if name else calls


# --------------------------------------------------------------------------- availability
def _drop(*rel: str):
    def change(home: Path) -> None:
        for r in rel:
            target = home / r
            if target.is_dir():
                for p in sorted(target.rglob("*"), reverse=True):
                    p.unlink() if p.is_file() else p.rmdir()
                target.rmdir()
            else:
                target.unlink()
    return change


def _empty(rel: str):
    def change(home: Path) -> None:
        for p in (home / rel).iterdir():
            p.unlink()
    return change


PROBLEMS = {  # case -> (change to a complete stand-in, words of the one-line reason)
    "glmtts_inference.py missing": (_drop("glmtts_inference.py"),
                                    "is not a GLM-TTS checkout: glmtts_inference.py is missing"),
    "no ckpt": (_drop("ckpt"), "has no ckpt/ folder: download the weights"),
    "two ckpt folders missing": (_drop("ckpt/speech_tokenizer", "ckpt/llm"),
                                 "lacks speech_tokenizer, llm: download the weights"),
    "empty tokenizer folder": (_empty("ckpt/vq32k-phoneme-tokenizer"),
                               "lacks vq32k-phoneme-tokenizer"),
    "no vocoder": (_drop("ckpt/hift", "ckpt/vocos2d"), "lacks hift (24 kHz), vocos2d (32 kHz)"),
    "flow checkpoint missing": (_drop("ckpt/flow/flow.pt"), "lacks ckpt/flow/flow.pt"),
    "speaker encoder missing": (_drop("frontend/campplus.onnx"), "frontend/campplus.onnx"),
}


@pytest.mark.parametrize("case", list(PROBLEMS))
def test_unavailable_reason_names_what_is_missing(home: Path, case: str, cpu_upstream: None
                                                  ) -> None:
    change, words = PROBLEMS[case]
    assert GlmTtsEngine.unavailable_reason_for(home) is None
    change(home)
    reason = GlmTtsEngine.unavailable_reason_for(home)
    assert reason is not None and words in reason and "\n" not in reason
    with pytest.raises(CheckoutError) as info:
        GlmTtsEngine(home=home)
    assert str(info.value) == reason


def test_unavailable_reason_for_the_setting(tmp_path: Path, home: Path, cpu_upstream: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLMTTS_HOME", raising=False)
    assert GlmTtsEngine.unavailable_reason().startswith("GLMTTS_HOME is not set")
    assert engine_status()["glm-tts"].startswith("GLMTTS_HOME is not set")
    monkeypatch.setenv("GLMTTS_HOME", str(tmp_path / "nowhere"))
    assert "does not exist" in GlmTtsEngine.unavailable_reason()
    monkeypatch.setenv("GLMTTS_HOME", str(home / "glmtts_inference.py"))
    assert "is not a folder" in GlmTtsEngine.unavailable_reason()
    monkeypatch.setenv("GLMTTS_HOME", str(home))
    assert GlmTtsEngine.unavailable_reason() is None and engine_status()["glm-tts"] is None
    assert isinstance(create_engine("glm-tts"), GlmTtsEngine)
    monkeypatch.setenv("GLMTTS_HOME", str(tmp_path / "nowhere"))
    assert create_engine("glm-tts", home=str(home)).home == home  # the option wins


def test_one_vocoder_is_enough(tmp_path: Path, cpu_upstream: None) -> None:
    only24 = standin.write_standin(tmp_path / "only24", vocoders=(24000,))
    only32 = standin.write_standin(tmp_path / "only32", vocoders=(32000,))
    assert checkout_problem(only24) is None and checkout_problem(only32) is None
    assert GlmTtsEngine(home=only24).capabilities.sample_rates == (24000,)
    e32 = GlmTtsEngine(home=only32)
    assert e32.capabilities.sample_rates == (32000,) and e32.sample_rate == 32000
    with pytest.raises(CheckoutError, match=r"ckpt/vocos2d/generator_jit\.ckpt is missing"):
        GlmTtsEngine(home=only24, sample_rate=32000)


def test_missing_python_packages_are_named(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkout_mod, "REQUIRES_CUDA", False)
    monkeypatch.setattr(checkout_mod, "UPSTREAM_PACKAGES",
                        {"numpy": "numpy", "surely_absent_module_xyz": "surely-absent"})
    reason = GlmTtsEngine.unavailable_reason_for(home)
    assert reason is not None and "lacks: surely-absent" in reason and "numpy" not in reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_is_required(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkout_mod, "UPSTREAM_PACKAGES", {})
    assert "runs on CUDA only" in GlmTtsEngine.unavailable_reason_for(home)
    e = GlmTtsEngine(home=home)
    with pytest.raises(DeviceUnavailableError, match=r"CUDA only .*\.cuda\(\)"):
        e.load("cpu")
    monkeypatch.setattr(engine_mod, "resolve_device", lambda device: "cuda:1")
    with pytest.raises(DeviceUnavailableError, match="CUDA_VISIBLE_DEVICES=1"):
        e.load("cuda:1")
    assert standin.read_calls(home) == [] and not e.loaded


# --------------------------------------------------------------------------- requests
def test_requests_are_checked_before_loading(engine: GlmTtsEngine, home: Path, prompt: Path,
                                             tmp_path: Path) -> None:
    with pytest.raises(ReferenceAudioError, match="give a reference recording"):
        engine.check(SynthesisRequest(text="Hello.", reference_text=PROMPT_TEXT))
    with pytest.raises(InvalidRequestError, match="transcript") as info:
        engine.check(req(prompt, reference_text="  "))
    assert info.value.field == "reference_text"
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(24000 * 3, np.float32), 24000)
    with pytest.raises(ReferenceAudioError, match="silent"):
        engine.check(req(silent))
    with pytest.raises(InvalidRequestError, match="numpy's limit") as info:
        engine.check(req(prompt, seed=2**40))
    assert info.value.field == "seed"
    with pytest.raises(InvalidRequestError, match="24000 or 32000 Hz only"):
        engine.check(req(prompt, sample_rate=16000))
    engine.check(req(prompt, sample_rate=32000))
    assert standin.read_calls(home) == []  # nothing loaded to check a request


def test_rate_without_its_vocoder_is_refused(tmp_path: Path, prompt: Path,
                                             cpu_upstream: None) -> None:
    e = GlmTtsEngine(home=standin.write_standin(tmp_path / "only24", vocoders=(24000,)))
    with pytest.raises(InvalidRequestError, match=r"ckpt/vocos2d/generator_jit\.ckpt"):
        e.check(req(prompt, sample_rate=32000))


def test_steps_run_in_upstream_order(engine: GlmTtsEngine, home: Path, prompt: Path) -> None:
    engine.load("cpu")
    result = engine.synthesize(req(prompt, sample_rate=24000))
    calls = steps(home)
    assert [c["step"] for c in calls[:3]] == ["load_models", "TextFrontEnd", "Token2Wav"]
    assert calls[0]["use_phoneme"] is False and calls[0]["sample_rate"] == 24000
    request_steps = [c for c in calls[3:] if c["step"] != "mel_cache_fill"]
    assert [c["step"] for c in request_steps[:7]] == [
        "text_normalize", "text_normalize", "_extract_text_token", "_extract_speech_token",
        "_extract_speech_feat", "_extract_spk_embedding", "generate_long"]
    norm_prompt, norm_text = request_steps[0]["text"], request_steps[1]["text"]
    assert norm_prompt == PROMPT_TEXT.lower()
    assert request_steps[2]["text"] == norm_prompt + " "  # prompt text + trailing space
    wav = request_steps[3]["arg"]
    assert isinstance(wav, list) and len(wav) == 1 and Path(wav[0]).is_absolute()
    assert request_steps[4]["arg"] == wav[0] == request_steps[5]["arg"]
    assert request_steps[4]["sample_rate"] == 24000
    assert not Path(wav[0]).exists()  # the WAV written for the request is gone
    gen = request_steps[6]
    assert gen["uttid"] == "" and gen["syn_text"] == norm_text and gen["seed"] == 7
    assert gen["sample_method"] == "ras" and gen["use_cache"] is False
    assert gen["use_phoneme"] is False and gen["device"] == "cpu"
    assert gen["cache_text"] == [norm_prompt + " "]
    assert gen["flow_prompt_token"] == [1, 75]  # 3 s of prompt at 25 tokens/s
    assert gen["speech_feat"] == [1, 150, 80] and gen["embedding"] == [1, 192]
    assert all(c["cwd"] == str(home) and c["path0"] == str(home) for c in calls)
    assert result.sample_rate == 24000 and result.audio.dtype == np.float32
    assert len(result.audio) > 0 and np.isfinite(result.audio).all()
    assert np.abs(result.audio).max() <= 1.0
    meta = result.metadata
    assert meta["engine"] == "glm-tts" and meta["seed"] == 7 and meta["sentences"] == 1
    assert meta["normalized_prompt_text"] == norm_prompt + " "
    assert meta["reference_s"] == 3.0 and len(meta["reference_id"]) == 16
    assert {"prompt", "generate", "reference"} <= set(result.timings)


def test_stereo_reference_reaches_upstream_as_mono(engine: GlmTtsEngine, home: Path,
                                                   tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, standin.voiced(2.5, 44100, channels=2), 44100)
    engine.load("cpu")
    engine.synthesize(req(stereo))
    assert steps(home, "_extract_speech_token")[0]["files"] == [[1, 44100]]


def test_every_knob_passes_through(engine: GlmTtsEngine, home: Path, prompt: Path) -> None:
    engine.load("cpu")
    a = engine.synthesize(req(prompt, seed=11))
    b = engine.synthesize(req(prompt, seed=11))
    c = engine.synthesize(req(prompt, seed=12))
    d = engine.synthesize(req(prompt, seed=11, sampling_method="topk"))
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.array_equal(a.audio, c.audio) and not np.array_equal(a.audio, d.audio)
    gens = steps(home, "generate_long")
    assert [g["seed"] for g in gens] == [11, 11, 12, 11]
    assert [g["sample_method"] for g in gens] == ["ras", "ras", "ras", "topk"]
    assert d.metadata["sampling_method"] == "topk"

    standin.clear_calls(home)
    engine.synthesize(req(prompt, LONG_TEXT, use_kv_cache=True))
    with_cache = [s["prompt_speech_tokens"] for s in steps(home, "segment")]
    standin.clear_calls(home)
    off = engine.synthesize(req(prompt, LONG_TEXT, use_kv_cache=False))
    without = [s["prompt_speech_tokens"] for s in steps(home, "segment")]
    assert len(with_cache) == len(without) == 3 and off.metadata["sentences"] == 3
    assert without == [75, 75, 75]  # the original prompt only
    assert with_cache[0] == 75 and with_cache[0] < with_cache[1] < with_cache[2]
    assert steps(home, "generate_long")[0]["use_cache"] is False

    drawn = engine.synthesize(req(prompt, seed=None))
    assert isinstance(drawn.metadata["seed"], int)
    assert steps(home, "generate_long")[-1]["seed"] == drawn.metadata["seed"]


def test_phoneme_mode(home: Path, prompt: Path, cpu_upstream: None) -> None:
    e = GlmTtsEngine(home=home, use_phoneme=True)
    e.load("cpu")
    result = e.synthesize(req(prompt))
    e.unload()
    assert steps(home, "load_models")[0]["use_phoneme"] is True
    assert steps(home, "TextFrontEnd")[0]["use_phoneme"] is True
    assert steps(home, "generate_long")[0]["use_phoneme"] is True
    assert steps(home, "g2p_infer") and result.metadata["use_phoneme"] is True


def test_upstream_failures_are_typed_and_restore_the_process(engine: GlmTtsEngine, prompt: Path
                                                             ) -> None:
    engine.load("cpu")
    cwd, path = os.getcwd(), list(sys.path)
    with pytest.raises(UpstreamError, match="while generating speech: ValueError: stand-in"):
        engine.synthesize(req(prompt, "Please EXPLODE now."))
    assert os.getcwd() == cwd and sys.path == path
    with pytest.raises(torch.cuda.OutOfMemoryError):  # unchanged: the session recovers from it
        engine.synthesize(req(prompt, "Please OOMPLEASE now."))
    assert os.getcwd() == cwd and sys.path == path
    assert engine.synthesize(req(prompt)).sample_rate == 24000


def test_library_hygiene(engine: GlmTtsEngine, prompt: Path) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        engine.load("cpu")  # upstream calls logging.basicConfig at import
        assert root.handlers == handlers and root.level == level
        engine.synthesize(req(prompt))  # upstream's set_seed changes the cuDNN flags
        assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.deterministic is flags[0]
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


# --------------------------------------------------------------------------- sample rate
def test_sample_rate_switch_resets_globals_and_reloads_the_vocoder_only(
        engine: GlmTtsEngine, home: Path, prompt: Path) -> None:
    engine.load("cpu")
    engine.synthesize(req(prompt, sample_rate=24000))
    audio_mod = sys.modules["utils.audio"]
    # The stand-in has upstream's bug: a cached 24 kHz window breaks a 32 kHz mel.
    with pytest.raises(RuntimeError, match="window"):
        audio_mod.mel_spectrogram(torch.zeros(1, 32000), n_fft=2560, num_mels=80,
                                  sampling_rate=32000, hop_size=640, win_size=2560, fmin=0,
                                  fmax=8000, center=False)
    parts = engine._parts
    old_t2w, old_vocoder = weakref.ref(parts.token2wav), weakref.ref(parts.token2wav.vocoder)
    old_window = weakref.ref(audio_mod.hann_window["cpu"])
    flow, llm = parts.token2wav.flow, parts.llm
    to32 = req(prompt, sample_rate=32000)
    assert engine.needs_reload(to32) and not engine.needs_reload(req(prompt, sample_rate=24000))

    switch = engine.reload_for(to32)
    gc.collect()
    assert isinstance(switch, SampleRateSwitch)
    assert (switch.from_rate, switch.to_rate) == (24000, 32000) and switch.seconds > 0
    assert switch.mel_cache_entries_dropped == 2 and audio_mod.mel_basis == {}
    assert old_t2w() is None and old_vocoder() is None and old_window() is None
    assert engine._parts.token2wav.flow is flow and engine._parts.llm is llm
    assert len(steps(home, "load_models")) == 1
    assert [t["sample_rate"] for t in steps(home, "Token2Wav")] == [24000, 32000]
    assert not engine.needs_reload(to32) and engine.reload_for(to32) is None
    del flow, llm

    result = engine.synthesize(to32)
    assert result.sample_rate == 32000 and "sample_rate_switch" not in result.metadata
    assert result.metadata["vocoder"] == "Vocos2D"
    assert steps(home, "_extract_speech_feat")[-1]["sample_rate"] == 32000
    assert steps(home, "mel_cache_fill")[-1]["n_fft"] == 2560

    back = engine.synthesize(req(prompt, sample_rate=24000))  # no reload_for: switches inline
    assert back.sample_rate == 24000 and back.timings["reload"] > 0
    assert back.metadata["sample_rate_switch"]["from_rate"] == 32000
    assert engine.capabilities.native_sample_rate == 24000


def test_rate_chosen_before_loading_costs_no_switch(engine: GlmTtsEngine, home: Path,
                                                    prompt: Path) -> None:
    to32 = req(prompt, sample_rate=32000)
    assert not engine.needs_reload(to32) and engine.reload_for(to32) is None
    engine.load("cpu")
    assert steps(home, "load_models")[0]["sample_rate"] == 32000
    assert engine.synthesize(to32).sample_rate == 32000
    assert [t["sample_rate"] for t in steps(home, "Token2Wav")] == [32000]


def test_two_engines_on_one_checkout(home: Path, prompt: Path, cpu_upstream: None) -> None:
    a, b = GlmTtsEngine(home=home), GlmTtsEngine(home=home, sample_rate=32000)
    a.load("cpu")
    b.load("cpu")
    for _ in range(2):  # the STFT caches are process-wide: each switch of user resets them
        assert a.synthesize(req(prompt)).sample_rate == 24000
        assert b.synthesize(req(prompt)).sample_rate == 32000
    a.unload()
    assert "glmtts_inference" in sys.modules  # b still uses the checkout
    assert b.synthesize(req(prompt)).sample_rate == 32000
    b.unload()
    assert "glmtts_inference" not in sys.modules


# --------------------------------------------------------------------------- cleanup
def test_full_cleanup_releases_every_component(engine: GlmTtsEngine, home: Path, prompt: Path
                                               ) -> None:
    engine.load("cpu")
    engine.synthesize(req(prompt))
    assert engine.model_bytes() == STANDIN_WEIGHT_BYTES
    parts = engine._parts
    refs = {name: weakref.ref(obj) for name, obj in zip(
        ["frontend", "text_frontend", "speech_tokenizer", "llm", "token2wav"], parts.all(),
        strict=True)}
    refs["vocoder"] = weakref.ref(parts.token2wav.vocoder)
    refs["flow"] = weakref.ref(parts.token2wav.flow)
    refs["mel_basis tensor"] = weakref.ref(sys.modules["utils.audio"].mel_basis["8000_cpu"])
    refs["glmtts_inference module"] = weakref.ref(sys.modules["glmtts_inference"])
    refs["utils.audio module"] = weakref.ref(sys.modules["utils.audio"])
    del parts
    assert str(home) not in sys.path  # only inside upstream calls

    engine.unload()
    gc.collect()
    assert {name for name, ref in refs.items() if ref() is not None} == set()
    assert not engine.loaded and engine.model_bytes() is None and engine.device is None
    assert _under(home) == [] and str(home) not in sys.path_importer_cache
    engine.unload()  # idempotent

    assert engine.synthesize is not None and not engine.loaded
    engine.load("cpu")  # loads afresh from new module objects
    assert engine.synthesize(req(prompt)).sample_rate == 24000
    assert len(steps(home, "load_models")) == 2


def test_failed_import_leaves_nothing_behind(tmp_path: Path, cpu_upstream: None) -> None:
    broken = standin.write_standin(tmp_path / "broken", broken_import="surely_absent_module_xyz")
    e = GlmTtsEngine(home=broken)
    with pytest.raises(UpstreamError, match=r"surely_absent_module_xyz.*requirements"):
        e.load("cpu")
    assert not e.loaded and _under(broken) == []


def test_clashing_module_names_are_refused(home: Path, tmp_path: Path, prompt: Path,
                                           cpu_upstream: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "utils", ModuleType("utils"))
        with pytest.raises(UpstreamError, match="a module named 'utils'"):
            GlmTtsEngine(home=home).load("cpu")
    first = GlmTtsEngine(home=home)
    first.load("cpu")
    other = GlmTtsEngine(home=standin.write_standin(tmp_path / "other"))
    try:
        with pytest.raises(UpstreamError, match="another GLM-TTS checkout"):
            other.load("cpu")
    finally:
        first.unload()
    other.load("cpu")
    other.unload()


def test_non_torch_parts_are_named(tmp_path: Path, prompt: Path, cpu_upstream: None) -> None:
    gpu = standin.write_standin(tmp_path / "gpu", providers=("CUDAExecutionProvider",
                                                             "CPUExecutionProvider"))
    e = GlmTtsEngine(home=gpu)
    e.load("cpu")
    meta = e.synthesize(req(prompt)).metadata
    e.unload()
    assert meta["non_torch_parts"] == [SPEAKER_ENCODER] == ["onnxruntime speaker encoder "
                                                             "(campplus)"]
    assert meta["speaker_encoder_providers"][0] == "CUDAExecutionProvider"


def test_speaker_encoder_on_the_cpu_is_host_memory(engine: GlmTtsEngine, prompt: Path) -> None:
    engine.load("cpu")
    meta = engine.synthesize(req(prompt)).metadata
    assert meta["non_torch_parts"] == [] and meta["host_non_torch_parts"] == [SPEAKER_ENCODER]


def test_session_loads_synthesises_and_cleans_up(home: Path, prompt: Path,
                                                 cpu_upstream: None) -> None:
    session = SynthesisSession("glm-tts", engine_options={"home": str(home)}, device="cpu",
                               isolate=False)
    outcome = session.synthesize(req(prompt))
    assert outcome.load is not None and outcome.load.features["weights_bytes"] == (
        STANDIN_WEIGHT_BYTES)
    assert outcome.result.metadata["engine"] == "glm-tts"
    session.cleanup("full")
    assert not session.loaded and _under(home) == []
    session.close()


def test_session_records_a_sample_rate_switch_as_a_load(home: Path, prompt: Path,
                                                        cpu_upstream: None) -> None:
    """Stand-in upstream (no real weights can exist here): the session measures the vocoder
    swap of a 24 -> 32 kHz switch as its own load event, not inside the synthesis."""
    from monitoring import open_store

    store = open_store(":memory:")
    session = SynthesisSession("glm-tts", engine_options={"home": str(home)}, device="cpu",
                               isolate=False,
                               store=store, policy_mode="off")
    session.synthesize(req(prompt, sample_rate=24000))
    switched = session.synthesize(req(prompt, sample_rate=32000))
    assert switched.load is not None and switched.load.features["reason"] == "sample_rate"
    assert switched.result.sample_rate == 32000
    assert "reload" not in switched.result.timings  # not measured inside the synthesis
    kinds = list(store.events(session_id=session.session_id)["kind"])
    assert kinds == ["load", "synthesis", "load", "synthesis"]
    session.close()


def test_full_cleanup_with_upstreams_namespace_subpackages(engine: GlmTtsEngine, home: Path,
                                                          prompt: Path) -> None:
    """Upstream has four namespace subpackages (no ``__init__.py``); removing a parent before
    its children once raised ``KeyError: 'cosyvoice'`` on every unload and left 15 modules."""
    engine.load("cpu")
    engine.synthesize(req(prompt))
    namespaces = ["cosyvoice.transformer", "cosyvoice.hifigan_cosy2", "utils.whisper_models",
                  "llm"]
    for name in namespaces:
        assert getattr(sys.modules[name], "__file__", None) is None  # a namespace package
    engine.unload()  # must not raise
    assert _under(home) == []
    assert not any(n.split(".")[0] in ("cosyvoice", "utils", "llm", "flow") for n in sys.modules
                   if getattr(sys.modules[n], "__file__", None) and str(home) in
                   str(sys.modules[n].__file__))
    engine.load("cpu")  # a fresh import works after the cleanup
    assert engine.synthesize(req(prompt)).sample_rate == 24000


def test_a_raw_cuda_out_of_memory_runtime_error_is_recovered(home: Path, prompt: Path,
                                                             cpu_upstream: None) -> None:
    """Upstream (or a library under it) may raise CUDA's out-of-memory error as a plain
    RuntimeError: the engine and the session recognise it with the one predicate
    (glmtts.errors.is_out_of_memory), clean up fully and retry."""
    session = SynthesisSession("glm-tts", engine_options={"home": str(home)}, device="cpu",
                               isolate=False, policy_mode="off")
    try:
        outcome = session.synthesize(req(prompt, text="Please rawoomonce, then speak."))
        assert outcome.recovery is not None and "succeeded" in outcome.recovery
        first, retry = outcome.attempts
        assert first.oom and "CUDA out of memory" in (first.error_message or "")
        assert retry.ok and retry.features["retry_of"] == first.event_id
        assert session.last_cleanup is not None and session.last_cleanup.level == "full"
    finally:
        session.close()


# --------------------------------------------------------------------------- precision
#: Elements the stand-in casts: the LLM (projection, llama) and the flow (gain, offset,
#: speaker Linear).
STANDIN_CAST_ELEMENTS = 2 * (8 * 8 + 8) + 80 + 80 + 192 * 80 + 80


def test_bf16_loads_the_llm_in_bf16_and_runs_the_flow_under_autocast(
        home: Path, prompt: Path, cpu_upstream: None) -> None:
    e = GlmTtsEngine(home=home, dtype="bf16")
    try:
        e.load("cpu")
        parts = e._parts
        # upstream hard-codes from_pretrained(dtype=float32): it was handed bf16 instead
        assert parts.llm.llama.loaded_dtype == "torch.bfloat16"
        assert {p.dtype for p in parts.llm.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in parts.token2wav.flow.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in parts.speech_tokenizer.model.parameters()} == {torch.float32}
        assert {p.dtype for p in parts.token2wav.vocoder.parameters()} == {torch.float32}
        assert e.model_bytes() == STANDIN_WEIGHT_BYTES - 2 * STANDIN_CAST_ELEMENTS
        inference = sys.modules["glmtts_inference"]
        assert inference.LlamaForCausalLM.__qualname__ == "LlamaForCausalLM"  # put back
        assert sys.modules["utils.yaml_util"].load_flow_model.__module__ == "utils.yaml_util"
        # the stand-in's flow feeds fp32 features to a Linear and its vocoder takes an fp32 mel
        # only, as upstream's: both fail unless the flow runs under autocast and returns fp32
        result = e.synthesize(req(prompt))
        assert result.metadata["dtype"] == "bf16"
        assert result.metadata["weights_bytes"] == e.model_bytes()
        assert np.isfinite(result.audio).all() and len(result.audio) > 0
        e.reload_for(req(prompt, sample_rate=32000))  # a new vocoder around the same flow
        assert e.synthesize(req(prompt, sample_rate=32000)).sample_rate == 32000
    finally:
        e.unload()


def test_fp16_on_the_cpu_is_refused_before_upstream_is_imported(
        home: Path, cpu_upstream: None) -> None:
    e = GlmTtsEngine(home=home, dtype="fp16")
    with pytest.raises(DtypeUnsupportedError, match="fp16 is refused on the CPU"):
        e.load("cpu")
    assert steps(home) == [] and not e.loaded  # load_models never ran
    assert "glmtts_inference" not in sys.modules


def test_weights_are_predicted_from_the_checkpoint_files(home: Path, cpu_upstream: None
                                                         ) -> None:
    header = json.dumps({"w": {"dtype": "BF16", "shape": [10, 4], "data_offsets": [0, 80]},
                         "__metadata__": {"format": "pt"}}).encode()
    (home / "ckpt/llm/model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + bytes(80))
    flow, hift = (home / "ckpt/flow/flow.pt").stat().st_size, (
        home / "ckpt/hift/hift.pt").stat().st_size
    llm = 4 * 40  # 40 elements, stored in bf16, counted as the fp32 upstream loads
    assert weights_estimate(home, 24000, "fp32") == llm + flow + hift
    assert weights_estimate(home, 24000, "bf16") == (llm + flow) // 2 + hift
    e = GlmTtsEngine(home=home)
    assert e.requested_dtype == "auto" and e.dtype_name == "fp32"
    assert e.memory_estimate("fp16") == ((llm + flow) // 2 + hift, None)
