"""The ``glm-tts`` engine with a real GLM-TTS checkout (``GLMTTS_HOME``), run as users run it:
in an engine worker under upstream's own interpreter (``GLMTTS_PYTHON``, else the checkout's
``.venv``, else this one).

Runs only where ``GLMTTS_HOME`` is set; skipped otherwise, or with the worker's own one-line
reason when its interpreter lacks something. It speaks one sentence with upstream's example
English prompt (``examples/prompt/jiayan_en.wav``) at each rate whose vocoder the checkout has,
switching the vocoder in one worker, then cleans up fully (no upstream module left in the
worker) and restarts the worker.

With real weights this needs CUDA; with the upstream kit of ``shared/`` (random weights, CPU
shim: ``PYTHONPATH=.../shim GLMTTS_SHIM_CPU=1 GLMTTS_SHIM_TINY=1``) it runs on the CPU.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from glmtts.engines.glm_tts import available_rates, configured_home
from glmtts.errors import WorkerError
from glmtts.request import SynthesisRequest
from glmtts.worker.engine import WorkerEngine

pytestmark = [pytest.mark.skipif(not os.environ.get("GLMTTS_HOME"),
                                 reason="GLMTTS_HOME is not set: no GLM-TTS checkout to run "
                                        "against"),
              pytest.mark.slow]

PROMPT = Path("examples/prompt/jiayan_en.wav")  # upstream's examples/example_en.jsonl
PROMPT_TEXT = "I wonder if you'd like to have a burger with me."
TEXT = "If you need anything, you can always come to Joey."


@pytest.fixture(scope="module")
def engine():
    e = WorkerEngine("glm-tts")
    try:
        e.environment()
    except WorkerError as exc:
        pytest.skip(str(exc))
    yield e
    e.close()


@pytest.mark.parametrize("rate", [24000, 32000])
def test_one_sentence_with_the_example_prompt(engine: WorkerEngine, rate: int) -> None:
    home = configured_home()
    assert home is not None
    if rate not in available_rates(home):
        pytest.skip(f"the checkout has no vocoder for {rate} Hz")
    prompt = home / PROMPT
    if not prompt.is_file():
        pytest.skip(f"{prompt} is missing from the checkout")
    request = SynthesisRequest(text=TEXT, reference_audio=prompt, reference_text=PROMPT_TEXT,
                               sample_rate=rate, seed=42)
    engine.check(request)
    if not engine.loaded:
        engine.reload_for(request)
        engine.load(engine.resolve_device("auto"))
    elif engine.needs_reload(request):
        switch = engine.reload_for(request)
        assert switch is not None and switch["to_rate"] == rate
    result = engine.synthesize(request)
    assert result.sample_rate == rate
    assert 0.5 < result.duration_s < 15.0
    assert np.isfinite(result.audio).all()
    assert result.metadata["speech_tokens"] > 0
    assert result.metadata["worker"]["pid"] == engine.pid
    assert engine.model_bytes() > 0


def test_full_cleanup_then_restart(engine: WorkerEngine) -> None:
    if not engine.loaded:
        pytest.skip("no synthesis ran")
    pid = engine.pid
    full = engine.cleanup("full")
    assert full["upstream_modules_left"] == 0 and engine.pid == pid and not engine.loaded
    engine.restart()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_bf16_loads_in_half_the_weights_and_speaks() -> None:
    home = configured_home()
    assert home is not None
    prompt = home / PROMPT
    if not prompt.is_file():
        pytest.skip(f"{prompt} is missing from the checkout")
    e = WorkerEngine("glm-tts", {"dtype": "bf16"})
    try:
        try:
            e.environment()
        except WorkerError as exc:
            pytest.skip(str(exc))
        request = SynthesisRequest(text=TEXT, reference_audio=prompt,
                                   reference_text=PROMPT_TEXT, seed=42)
        e.load(e.resolve_device("auto"))  # refused first where the device has no bf16
        result = e.synthesize(request)
        assert e.dtype_name == "bf16" and result.metadata["dtype"] == "bf16"
        assert 0.5 < result.duration_s < 15.0 and np.isfinite(result.audio).all()
        predicted = e.memory_estimate("bf16")
        assert predicted is not None
        assert abs(e.model_bytes() - predicted[0]) < 0.1 * predicted[0]  # from the ckpt files
        assert predicted[0] < 0.75 * e.memory_estimate("fp32")[0]
    finally:
        e.close()
