"""The converted-voice cache: the second load of a voice reads our own weights (memory-mapped)
and never imports ``onnx``; the audio is the same; a changed voice file is converted again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = """
import sys, numpy as np
from glmtts.engines import create_engine
from glmtts.request import SynthesisRequest
engine = create_engine("piper", cache={cache})
engine.load("cpu")
audio = engine.synthesize(SynthesisRequest(text="Cached weights speak alike.", seed=3)).audio
np.save(sys.argv[1], audio)
print("onnx imported:", "onnx" in sys.modules)
"""


def _run(tmp_path: Path, name: str, cache: bool = True) -> tuple[str, object]:
    import numpy as np

    out = tmp_path / f"{name}.npy"
    env = {**os.environ, "GLMTTS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(cache=cache), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), np.load(out)


@pytest.mark.slow
def test_the_second_load_skips_onnx_and_speaks_the_same(tmp_path: Path) -> None:
    import numpy as np

    first, audio1 = _run(tmp_path, "first")
    assert first == "onnx imported: True"  # converted once
    entries = list((tmp_path / "cache" / "voices").glob("*.pt"))
    assert len(entries) == 1
    second, audio2 = _run(tmp_path, "second")
    assert second == "onnx imported: False"  # read from the cache
    assert np.array_equal(audio1, audio2)
    bypass, audio3 = _run(tmp_path, "bypass", cache=False)
    assert bypass == "onnx imported: True" and np.array_equal(audio1, audio3)


def test_an_entry_is_keyed_by_the_voice_file(tmp_path: Path, monkeypatch) -> None:
    import torch

    from glmtts.engines.piper import cache
    from glmtts.engines.piper.vits_config import VitsConfig

    monkeypatch.setenv("GLMTTS_CACHE_DIR", str(tmp_path / "cache"))
    voice = tmp_path / "voice.onnx"
    voice.write_bytes(b"pretend onnx")
    assert cache.load(voice) is None
    state = {"w": torch.arange(4, dtype=torch.float32)}
    assert cache.save(voice, VitsConfig(), state) is not None
    config, loaded = cache.load(voice)
    assert config == VitsConfig() and torch.equal(loaded["w"], state["w"])
    voice.write_bytes(b"another pretend onnx, longer")  # changed: size and mtime differ
    assert cache.load(voice) is None
