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
code = main(["synth", sys.argv[1], "-o", sys.argv[2], "--seed", "1", "--cpu"])
print("modules:", " ".join(sorted(sys.modules)))
raise SystemExit(code)
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GLMTTS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_synth_imports_only_what_it_uses(tmp_path: Path) -> None:
    runs = []
    for name in ("first", "second"):  # the first fills the voice cache (and imports onnx)
        done = subprocess.run([sys.executable, "-c", PROGRAM, TEXT, str(tmp_path / f"{name}.wav")],
                              cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stderr
        runs.append(set(done.stdout.split("modules:", 1)[1].split()))
    first, second = runs
    assert "onnx" in first and "torch" in second and "glmtts.engines.piper" in second
    assert not {m for m in UNUSED if m in second}, "imported without need"
    a, rate_a = sf.read(tmp_path / "first.wav")
    b, rate_b = sf.read(tmp_path / "second.wav")
    assert rate_a == rate_b == 22050 and len(a) > rate_a and (a == b).all()


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
