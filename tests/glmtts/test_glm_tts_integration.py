"""The ``glm-tts`` engine with a real GLM-TTS checkout and weights (``GLMTTS_HOME``).

Runs only where ``GLMTTS_HOME`` names a complete checkout, its Python requirements are installed
and CUDA is available; otherwise it is skipped with the engine's own one-line reason. It speaks
one sentence with upstream's example English prompt (``examples/prompt/jiayan_en.wav``) at each
rate whose vocoder the checkout has, switching the vocoder in one process (the switch that
needs upstream's STFT caches reset).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from glmtts.engines.glm_tts import GlmTtsEngine, available_rates, configured_home
from glmtts.request import SynthesisRequest

REASON = (GlmTtsEngine.unavailable_reason() if os.environ.get("GLMTTS_HOME")
          else "GLMTTS_HOME is not set: no GLM-TTS checkout to run against")
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)), pytest.mark.slow,
              pytest.mark.gpu]

PROMPT = Path("examples/prompt/jiayan_en.wav")  # upstream's examples/example_en.jsonl
PROMPT_TEXT = "I wonder if you'd like to have a burger with me."
TEXT = "If you need anything, you can always come to Joey."


@pytest.fixture(scope="module")
def engine():
    e = GlmTtsEngine()
    yield e
    e.unload()
    gc.collect()


@pytest.mark.parametrize("rate", [24000, 32000])
def test_one_sentence_with_the_example_prompt(engine: GlmTtsEngine, rate: int) -> None:
    home = configured_home()
    assert home is not None
    if rate not in available_rates(home):
        pytest.skip(f"the checkout has no vocoder for {rate} Hz")
    prompt = home / PROMPT
    if not prompt.is_file():
        pytest.skip(f"{prompt} is missing from the checkout")
    request = SynthesisRequest(text=TEXT, reference_audio=prompt, reference_text=PROMPT_TEXT,
                               sample_rate=rate, seed=42)
    cwd, path = os.getcwd(), list(sys.path)
    engine.check(request)
    if not engine.loaded:
        engine.reload_for(request)
        engine.load("cuda")
    elif engine.needs_reload(request):
        switch = engine.reload_for(request)
        assert switch is not None and switch.to_rate == rate
    result = engine.synthesize(request)
    assert os.getcwd() == cwd and sys.path == path
    assert result.sample_rate == rate
    assert 1.0 < result.duration_s < 15.0
    assert np.isfinite(result.audio).all()
    assert float(np.sqrt(np.mean(result.audio**2))) > 1e-3  # not silence
    assert result.metadata["speech_tokens"] > 25
    assert engine.model_bytes() > 1_000_000_000
