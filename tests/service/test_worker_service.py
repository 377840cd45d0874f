"""The service with its engine in a worker process (``serve --isolate``), real processes:
synthesis, a restart cleanup that ends the worker, the next synthesis in a fresh one, and a
shutdown that ends the worker too."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest


def _worker_of(pid: int) -> list[int]:
    return [c.pid for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_restart_over_http(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "isolated", "--isolate", "--preload")
    try:
        with service.client() as client:
            (worker,) = _worker_of(service.proc.pid)
            answer = client.post("/v1/synthesize", json={"text": "Hello there.", "seed": 1})
            assert answer.status_code == 200, answer.text
            light = client.post("/v1/cleanup", json={"level": "light"}).json()
            assert light["worker_pid"] == worker
            restart = client.post("/v1/cleanup", json={"level": "restart"})
            assert restart.status_code == 200, restart.text
            body = restart.json()
            assert body["worker_pid"] == worker and body["freed"]["host_rss_bytes"] > 0
            assert not body["model_loaded_after"]
            deadline = time.monotonic() + 10
            while _worker_of(service.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _worker_of(service.proc.pid) == []
            again = client.post("/v1/synthesize", json={"text": "Back again.", "seed": 1})
            assert again.status_code == 200
            (fresh,) = _worker_of(service.proc.pid)
            assert fresh != worker
            memory = client.get("/v1/memory").json()
            assert memory["snapshot"]["host_rss_bytes"] == pytest.approx(
                psutil.Process(fresh).memory_info().rss, rel=0.2)
    finally:
        code = service.stop()
    assert code == 0, service.output()
    assert not psutil.pid_exists(fresh) or psutil.Process(fresh).status() == "zombie"


def test_restart_needs_isolation(client) -> None:
    answer = client.post("/v1/cleanup", json={"level": "restart"})
    assert answer.status_code == 422
    assert "serve with --isolate" in answer.json()["error"]
