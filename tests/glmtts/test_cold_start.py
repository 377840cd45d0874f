"""What ``python -m glmtts synth`` does at start and at exit (real processes, the real voice):
it imports nothing that a synthesis does not use, and its early exit loses no output and keeps
the exit status. (How fast that is, against Piper's own CLI, is bench/cold_start.py's job.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
TEXT = "The weather is lovely today, isn't it?"
#: Modules a synthesis from the voice cache has no use for.
UNUSED = ("onnx", "onnxruntime", "pandas", "plotly", "streamlit", "psutil", "fastapi",
          "uvicorn", "sqlite3", "monitoring", "torch._dynamo", "sympy", "piper.voice")
PROGRAM = """
import sys
from glmtts.cli import main
code = main(["synth", sys.argv[1], "-o", sys.argv[2], "--seed", "1", "--cpu", *sys.argv[3:]])
print("modules:", " ".join(sorted(sys.modules)))
raise SystemExit(code)
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GLMTTS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_synth_imports_only_what_it_uses(tmp_path: Path) -> None:
    runs = []
    # The first fills the voice caches (and imports onnx and torch: the numpy runtime's
    # weights are written from the torch ones); the second is a one-off synthesis as users
    # run it (numpy, no torch); the third asks for torch.
    for name, extra in (("first", []), ("second", []), ("torch", ["--runtime", "torch"])):
        done = subprocess.run([sys.executable, "-c", PROGRAM, TEXT,
                               str(tmp_path / f"{name}.wav"), *extra],
                              cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stderr
        runs.append(set(done.stdout.split("modules:", 1)[1].split()))
    first, second, torch_run = runs
    assert "onnx" in first and "torch" in first and "glmtts.engines.piper.vits_numpy" in second
    assert not {m for m in (*UNUSED, "torch") if m in second}, "imported without need"
    assert "torch" in torch_run and not {m for m in UNUSED if m in torch_run}
    a, rate_a = sf.read(tmp_path / "first.wav", dtype="float32")
    b, rate_b = sf.read(tmp_path / "second.wav", dtype="float32")
    c, rate_c = sf.read(tmp_path / "torch.wav", dtype="float32")
    assert rate_a == rate_b == rate_c == 22050 and len(a) > rate_a
    # the first two ran numpy (from converted, then from cached weights): the same samples;
    # torch draws the same noise for the same seed: the same to within float rounding
    assert len(a) == len(b) == len(c) and (a == b).all()
    assert float(abs(a - c).max()) <= 2 / 32768


@pytest.mark.slow
def test_early_exit_keeps_output_and_status(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    done = subprocess.run([sys.executable, "-m", "glmtts", "synth", TEXT, "-o", str(out),
                           "--seed", "1", "--cpu"], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # a pipe: buffered output, flushed before the exit
    assert lines[0].startswith(f"wrote {out} (22050 Hz, seed 1, device cpu")
    assert lines[1].startswith("duration ") and "real-time factor" in lines[1]
    assert sf.info(out).frames > 22050
    bad = subprocess.run([sys.executable, "-m", "glmtts", "synth", TEXT, "-o", str(tmp_path)],
                         cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=180)
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: -o {tmp_path} is a folder")
