"""The service's ``--dtype`` (real server processes, the twin on the CPU): the precision in
``/v1/memory``, and a precision the CPU cannot run refused with 422 naming the field, or at
start with ``--preload``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bf16_shows_in_memory_and_the_model_list(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "bf16", "--engine", "twin", "--dtype", "bf16", "--preload")
    try:
        with service.client() as c:
            memory = c.get("/v1/memory").json()
            (model,) = memory["models"]
            assert model["engine"] == "twin" and model["dtype"] == "bf16"
            assert model["dtype_requested"] == "bf16" and model["weights_bytes"] > 0
            session = memory["session"]
            assert session["dtype"] == "bf16" and session["dtype_reason"] is None
            answer = c.post("/v1/synthesize?format=json", json={"text": "Hi there.",
                                                                "seed": 1})
            assert answer.status_code == 200, answer.text
    finally:
        assert service.stop() == 0, service.output()


def test_fp16_on_the_cpu_is_a_422_naming_the_field(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "fp16", "--engine", "twin", "--dtype", "fp16")
    try:
        with service.client() as c:
            answer = c.post("/v1/synthesize", json={"text": "Hi there.", "seed": 1})
            assert answer.status_code == 422
            body = answer.json()
            assert body["field"] == "dtype"
            assert body["error"].startswith("fp16 is refused on the CPU")
            ready = c.get("/ready")
            assert ready.status_code == 503 and "fp16 is refused" in ready.json()["reason"]
            assert c.get("/v1/memory").json()["models"] == []  # nothing was loaded
    finally:
        assert service.stop() == 0, service.output()


def test_fp16_with_preload_exits_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLMTTS_DB": str(tmp_path / "e.sqlite3")}
    done = subprocess.run([sys.executable, "-m", "glmtts", "serve", "--cpu", "--port", "0",
                           "--engine", "twin", "--dtype", "fp16", "--preload"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: fp16 is refused on the CPU")
