"""Weight precision (``dtype``): the refusals, the ``auto`` rule, and real 16-bit loads.

The CPU refusals and the bf16 loads run for real on this machine's torch. No GPU exists here:
where a test needs one (a GPU without bf16, free GPU memory for ``auto``), it passes FAKE
figures (:class:`DeviceFacts`, a free-bytes number), and says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glmtts.auto_precision import decide
from glmtts.engines.twin import TwinEngine
from glmtts.errors import DtypeUnsupportedError, InvalidRequestError
from glmtts.precision import (
    DeviceFacts,
    GiB,
    check_dtype,
    choose_auto,
    device_facts,
    dtype_problem,
    half_dtype,
)
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from glmtts.worker.engine import WorkerEngine

ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.02
TEXT = "A short twin sentence."


# --------------------------------------------------------------------------- refusals
def test_fp16_on_this_cpu_is_refused_with_what_to_choose() -> None:
    with pytest.raises(DtypeUnsupportedError) as info:
        check_dtype("fp16", "cpu")
    assert info.value.field == "dtype"
    message = str(info.value)
    assert message.startswith("fp16 is refused on the CPU")
    assert "Choose bf16 (the same memory) or fp32" in message


def test_bf16_and_fp32_run_on_this_cpu() -> None:
    facts = device_facts("cpu")
    assert facts.kind == "cpu" and facts.cpu_capability != "DEFAULT"
    assert dtype_problem("bf16", "cpu") is None
    assert dtype_problem("fp32", "cpu") is None and dtype_problem("auto", "cpu") is None


def test_a_cpu_torch_does_not_vectorise_refuses_bf16() -> None:
    facts = DeviceFacts("cpu", cpu_capability="DEFAULT")  # FAKE: this CPU has AVX2
    problem = dtype_problem("bf16", "cpu", facts)
    assert problem is not None and "capability DEFAULT" in problem
    assert problem.endswith("Choose fp32")
    fp16 = dtype_problem("fp16", "cpu", facts)
    assert fp16 is not None and "Choose fp32;" in fp16  # bf16 is no alternative there


def test_a_gpu_without_bf16_refuses_it_and_names_fp16() -> None:
    turing = DeviceFacts("cuda", bf16_native=False, fp16_native=True, name="Tesla T4")  # FAKE
    problem = dtype_problem("bf16", "cuda", turing)
    assert problem is not None and problem.startswith("bf16 is refused on Tesla T4")
    assert "Choose fp16 (the same memory) or fp32" in problem
    assert dtype_problem("fp16", "cuda", turing) is None
    assert half_dtype(turing) == "fp16"
    ampere = DeviceFacts("cuda", bf16_native=True, fp16_native=True, name="A10G")  # FAKE
    assert dtype_problem("bf16", "cuda:0", ampere) is None and half_dtype(ampere) == "bf16"


def test_unknown_dtype_names_the_choices() -> None:
    with pytest.raises(InvalidRequestError, match="auto, fp32, bf16, fp16"):
        TwinEngine(scale=SCALE, dtype="int8")


def test_twin_refuses_fp16_on_the_cpu_before_building_anything() -> None:
    engine = TwinEngine(scale=SCALE, dtype="fp16")
    with pytest.raises(DtypeUnsupportedError, match="fp16 is refused"):
        engine.load("cpu")
    assert not engine.loaded and engine.model_bytes() is None


# --------------------------------------------------------------------------- real loads
def test_twin_in_bf16_holds_half_the_weights_and_speaks() -> None:
    request = SynthesisRequest(text=TEXT, seed=3)
    fp32, bf16 = TwinEngine(scale=SCALE, dtype="fp32"), TwinEngine(scale=SCALE, dtype="bf16")
    try:
        fp32.load("cpu")
        bf16.load("cpu")
        assert bf16.model_bytes() * 2 == fp32.model_bytes()
        assert bf16.memory_estimate("bf16")[0] == bf16.model_bytes()
        result = bf16.synthesize(request)
        assert result.metadata["dtype"] == "bf16"
        assert result.metadata["weights_bytes"] == bf16.model_bytes()
        assert result.audio.dtype == np.float32 and np.isfinite(result.audio).all()
        assert len(result.audio) == len(fp32.synthesize(request).audio)  # same lengths
    finally:
        fp32.unload()
        bf16.unload()


def test_auto_is_fp32_on_the_cpu_and_the_load_event_says_so() -> None:
    session = SynthesisSession("twin", engine_options={"scale": SCALE}, device="cpu")
    try:
        outcome = session.synthesize(SynthesisRequest(text=TEXT, seed=1))
        features = outcome.load.features
        assert features["dtype"] == "fp32" and features["dtype_requested"] == "auto"
        assert features["dtype_reason"] is None and features["dtype_free_bytes"] is None
        assert outcome.record.features["dtype"] == "fp32"  # the synthesis event too
        assert session.pending(SynthesisRequest(text=TEXT)).feature_map()["dtype"] == "fp32"
    finally:
        session.close()


def test_an_explicit_bf16_twin_session_records_it() -> None:
    session = SynthesisSession("twin", engine_options={"scale": SCALE, "dtype": "bf16"},
                               device="cpu")
    try:
        outcome = session.synthesize(SynthesisRequest(text=TEXT, seed=1))
        assert outcome.load.features["dtype"] == "bf16"
        assert outcome.load.features["dtype_requested"] == "bf16"
        assert "dtype_reason" not in outcome.load.features  # nothing was chosen
        assert outcome.record.features["dtype"] == "bf16"
    finally:
        session.close()


@pytest.mark.slow
def test_the_chosen_dtype_travels_to_the_worker() -> None:
    worker = WorkerEngine("twin", {"scale": SCALE, "dtype": "auto"})
    local = TwinEngine(scale=SCALE, dtype="bf16")
    try:
        assert worker.requested_dtype == "auto" and worker.dtype_name is None
        worker.choose_dtype("bf16")
        worker.load("cpu")
        local.load("cpu")
        assert worker.dtype_name == "bf16" and worker.model_bytes() == local.model_bytes()
        result = worker.synthesize(SynthesisRequest(text=TEXT, seed=2))
        assert result.metadata["dtype"] == "bf16"
        worker.cleanup("full")
        worker.choose_dtype("fp32")  # the next load decides again
        worker.load("cpu")
        assert worker.dtype_name == "fp32" and worker.model_bytes() == 2 * local.model_bytes()
    finally:
        worker.close()
        local.unload()


@pytest.mark.slow
def test_a_refusal_in_the_worker_comes_back_typed() -> None:
    worker = WorkerEngine("twin", {"scale": SCALE, "dtype": "fp16"})
    try:
        with pytest.raises(DtypeUnsupportedError, match="fp16 is refused") as info:
            worker.load("cpu")
        assert info.value.field == "dtype" and not worker.loaded
    finally:
        worker.close()


# --------------------------------------------------------------------------- the auto rule
def test_auto_keeps_fp32_whenever_it_fits() -> None:
    # FAKE free-memory figures: there is no GPU here.
    choice = choose_auto("cuda", fp32_weights=8 * GiB, half_weights=4 * GiB, peak=GiB // 2,
                         free=10 * GiB, margin=0.10)
    assert choice.dtype == "fp32" and choice.line is None
    assert choice.fp32_need_bytes == round(8.5 * GiB * 1.1)
    on_cpu = choose_auto("cpu", fp32_weights=8 * GiB, half_weights=4 * GiB, peak=0, free=GiB,
                         margin=0.1)
    assert on_cpu.dtype == "fp32" and on_cpu.fp32_need_bytes is None  # nothing read on a CPU
    unknown = choose_auto("cuda", fp32_weights=8 * GiB, half_weights=4 * GiB, peak=0,
                          free=None, margin=0.1)
    assert unknown.dtype == "fp32"


def test_auto_goes_16_bit_when_only_that_fits_and_says_so() -> None:
    # FAKE: 6 GiB free on a GPU that does not exist here.
    choice = choose_auto("cuda", fp32_weights=8 * GiB, half_weights=4 * GiB, peak=GiB // 2,
                         free=6 * GiB, margin=0.10)
    assert choice.dtype == "bf16"
    assert choice.line == "Loaded in bf16: fp32 needs ~9.3 GiB, 6.0 GiB free."
    assert choice.need_bytes == round(4.5 * GiB * 1.1)
    turing = choose_auto("cuda", fp32_weights=8 * GiB, half_weights=4 * GiB, peak=0,
                         free=5 * GiB, margin=0.10, half="fp16")
    assert turing.dtype == "fp16" and turing.line.startswith("Loaded in fp16:")
    tight = choose_auto("cuda", fp32_weights=8 * GiB, half_weights=4 * GiB, peak=0,
                        free=3 * GiB, margin=0.10)
    assert tight.dtype == "bf16" and tight.line.endswith("it may not fit either.")


def test_decide_tells_the_engine_before_its_load(monkeypatch: pytest.MonkeyPatch) -> None:
    # FAKE GPU: its facts and its free memory; only the decision runs, nothing loads on it.
    monkeypatch.setattr("glmtts.auto_precision.device_facts",
                        lambda device: DeviceFacts("cuda", bf16_native=True, name="fake"))
    engine = TwinEngine(scale=SCALE)
    fp32_weights, peak = engine.memory_estimate("fp32")
    need = (fp32_weights + peak) * 1.1
    roomy = decide(engine, "cuda", free_bytes=round(need) + 1, margin=0.1)
    assert roomy.dtype == "fp32" and engine.dtype_name == "fp32" and roomy.basis == "estimate"
    tight = decide(engine, "cuda", free_bytes=round(need) - 1, margin=0.1)
    assert tight.dtype == "bf16" and engine.dtype_name == "bf16"
    assert tight.line.startswith("Loaded in bf16: fp32 needs ~")
    history = decide(engine, "cuda", free_bytes=round(need) + 1, margin=0.1,
                     history_peak=peak + 10 * 2**20)  # the policy predicts a larger peak
    assert history.dtype == "bf16" and history.basis == "history"
    explicit = TwinEngine(scale=SCALE, dtype="fp32")
    assert decide(explicit, "cuda", free_bytes=1, margin=0.1) is None  # asked for: kept
    assert explicit.dtype_name == "fp32"


# --------------------------------------------------------------------------- command line
def _synth(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "glmtts", "synth", TEXT, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_cli_dtype(tmp_path: Path) -> None:
    refused = _synth("-o", str(tmp_path / "a.wav"), "--engine", "twin", "--dtype", "fp16",
                     "--cpu")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: fp16 is refused on the CPU")
    assert not (tmp_path / "a.wav").exists()
    done = _synth("-o", str(tmp_path / "b.wav"), "--engine", "twin", "--dtype", "bf16",
                  "--cpu", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert " in bf16\n" in done.stdout
    slow = "no native bf16 kernels" in done.stdout  # said where the CPU has no native bf16
    assert slow == (not device_facts("cpu").bf16_native)
    piper = _synth("-o", str(tmp_path / "c.wav"), "--dtype", "bf16")
    assert piper.returncode == 2 and "--dtype: the piper engine does not take it" in (
        piper.stderr)
