"""The service as a real subprocess on a free loopback port, with its own SQLite file.

One service (``service`` fixture) is shared by the tests of this folder that only need a running
service; the shutdown tests start their own. Every wait is bounded in time.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
#: Text limit of the shared service: short texts keep every synthesis quick on a shared CPU.
MAX_CHARS = 24
#: Upload limit of the shared service (small, so that the 413 test sends little).
MAX_UPLOAD = 1_000_000
#: A request text containing this fails once with an injected out-of-memory error.
OOM_MARK = "oomtrip"
#: The shared service's engine: the embedded voice with the test-only out-of-memory switch.
FAULTY = "tests.fault_engines:FaultyPiper"
READY_TIMEOUT_S = 120.0


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wav(seconds: float = 0.2, rate: int = 16000, freq: float = 220.0) -> bytes:
    """A short sine tone as WAV bytes."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * freq * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class ServiceProcess:
    """A running ``python -m glmtts serve``."""

    url: str
    proc: subprocess.Popen
    db: Path
    log: Path
    headers: dict[str, str] = field(default_factory=dict)
    max_chars: int = MAX_CHARS
    max_upload: int = MAX_UPLOAD
    oom_mark: str = OOM_MARK

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Send ``sig`` and wait (bounded); kill if it does not end. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_service(folder: Path, *args: str, host: str = LOOPBACK, env: dict | None = None,
                  token: str | None = None) -> ServiceProcess:
    """Start the service in ``folder`` (database and log there) and wait until it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    db = folder / "events.sqlite3"
    log = folder / "service.log"
    # One torch thread: on shared cores two OpenMP threads make a synthesis 0.3 s or 7 s at
    # random (threads spinning at barriers), which only makes the tests slow and flaky.
    full_env = {**os.environ, "GLMTTS_DB": str(db), "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("GLMTTS_TOKEN", None)
    cmd = [sys.executable, "-m", "glmtts", "serve", "--host", host, "--port", str(port),
           "--cpu", *args]
    if token is not None:
        cmd += ["--token", token]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    service = ServiceProcess(f"http://{host}:{port}", proc, db, log, headers)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}:\n"
                               f"{service.output()}")
        try:
            if httpx.get(f"{service.url}/v1/health", headers=headers,
                         timeout=2.0).status_code == 200:
                return service
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    service.stop(signal.SIGKILL)
    raise RuntimeError(f"the service did not answer within {READY_TIMEOUT_S} s:\n"
                       f"{service.output()}")


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory):
    """The shared service: CPU, short texts, small upload limit, an OOM fault armed."""
    running = start_service(tmp_path_factory.mktemp("service"), "--preload",
                            "--max-text-chars", str(MAX_CHARS),
                            "--max-upload-bytes", str(MAX_UPLOAD),
                            "--engine", FAULTY, env={"GLMTTS_TEST_OOM": OOM_MARK})
    yield running
    code = running.stop()
    assert code == 0, running.output()


@pytest.fixture
def client(service: ServiceProcess):
    with service.client() as c:
        yield c


@pytest.fixture(scope="session")
def launch():
    """``launch(folder, *serve_args, host=..., env=..., token=...)`` starts a service."""
    return start_service


@pytest.fixture(scope="session")
def make_wav():
    """``make_wav(seconds, rate)`` -> WAV bytes of a sine tone."""
    return wav


@pytest.fixture(scope="session")
def parse_metrics():
    """``parse_metrics(text)`` -> {(name, labels): value}."""
    return metric_values


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out
