"""Clean shutdown: SIGTERM/SIGINT release the model, keep every committed event, exit 0
without waiting for the work in flight; and the reusable :class:`GracefulShutdown` helper
on its own."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

# A guard against a hang, not a speed target: the service ends in-flight work after its
# graceful timeout, so on any machine it exits long before this; how fast it exits is printed.
EXIT_LIMIT_S = 60.0
LONG_TEXT = ("This sentence is long enough to keep the engine busy for a little while, so "
             "that the signal arrives in the middle of it.")


def events(db) -> list[tuple[str, str, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return conn.execute("SELECT event_id, kind, ok FROM events ORDER BY id").fetchall()


def wait_until_running(service, timeout_s: float = 10.0) -> None:
    """Until the service reports a synthesis waiting or running (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{service.url}/v1/health", headers=service.headers,
                     timeout=2).json()["pending"] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the synthesis never started")


SCENARIOS = [
    pytest.param(signal.SIGTERM, None, "2.5", id="SIGTERM"),
    # another loopback address with a token: the token path over real HTTP
    pytest.param(signal.SIGINT, "tok-123", "2.5", id="SIGINT-token"),
    # the synthesis outlasts the graceful timeout: it is cut (503), the exit stays prompt
    pytest.param(signal.SIGTERM, None, "0.2", id="SIGTERM-overtime"),
]


@pytest.mark.parametrize(("sig", "token", "graceful"), SCENARIOS)
def test_signal_during_a_synthesis_exits_0_quickly_and_keeps_every_event(
        tmp_path, launch, sig, token, graceful) -> None:
    host = "127.0.0.2" if token else "127.0.0.1"
    service = launch(tmp_path, "--preload", "--max-text-chars", "400", "--graceful-timeout",
                     graceful, host=host, token=token)
    answered: dict[str, str] = {}
    with service.client() as http:
        first = http.post("/v1/synthesize", json={"text": "Warm up.", "seed": 1})
        assert first.status_code == 200
        answered["warm"] = first.headers["x-synthesis-event"]
        if token:
            bare = httpx.get(f"{service.url}/v1/memory", timeout=5)
            assert bare.status_code == 401 and "token" in bare.json()["error"]
            assert httpx.get(f"{service.url}/metrics", timeout=5).status_code == 200

    def long_request() -> None:
        with service.client(timeout=30) as http:
            try:
                response = http.post("/v1/synthesize", json={"text": LONG_TEXT, "seed": 2})
            except httpx.HTTPError as exc:
                answered["long_error"] = repr(exc)
            else:
                answered["long_status"] = str(response.status_code)
                if response.status_code == 200:
                    answered["long"] = response.headers["x-synthesis-event"]

    thread = threading.Thread(target=long_request, daemon=True)
    thread.start()
    wait_until_running(service)
    time.sleep(0.2)  # inside the engine now
    t0 = time.monotonic()
    service.proc.send_signal(sig)
    try:
        code = service.proc.wait(EXIT_LIMIT_S + 5)
    finally:
        service.stop(signal.SIGKILL)
    took = time.monotonic() - t0
    thread.join(10)
    log = service.output()
    print(f"\n{sig!r}: exit {code} after {took:.2f} s; answers {answered}")
    assert code == 0, log
    assert took <= EXIT_LIMIT_S, f"exit took {took:.1f} s\n{log}"
    assert answered.get("long_status") in ("200", "503"), answered
    stored = {event_id: (kind, ok) for event_id, kind, ok in events(service.db)}
    for name in ("warm", "long"):
        if name in answered:  # every synthesis the client got an answer for is stored
            assert stored[answered[name]] == ("synthesis", 1), name
    kinds = [kind for kind, _ in stored.values()]
    assert kinds[0] == "load", kinds
    if answered["long_status"] == "200":
        assert kinds[-1] == "cleanup", kinds  # the model was released, measured, at exit
    assert "received" in log and "Traceback" not in log, log


def test_refuses_a_public_address_without_a_token(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "glmtts", "serve", "--host", "0.0.0.0",
                           "--port", "9", "--cpu", "--db", str(tmp_path / "x.sqlite3")],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "GLMTTS_TOKEN": ""})
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0" in done.stderr and "--token" in done.stderr
    assert not (tmp_path / "x.sqlite3").exists()  # refused before opening anything


HELPER = textwrap.dedent("""
    import json, sys, time
    from glmtts.shutdown import GracefulShutdown
    interrupt = sys.argv[1] == "interrupt"
    done, step = [], -1
    with GracefulShutdown(interrupt=interrupt) as stop:
        stop.add(done.append, "store closed")
        stop.add(done.append, "model released")
        print("ready", flush=True)
        for step in range(600):
            if stop.requested:
                break
            time.sleep(0.05)
    print(json.dumps({"done": done, "steps": step, "signal": stop.signum}), flush=True)
    sys.exit(stop.exit_code)
""")


@pytest.mark.parametrize("mode", ["interrupt", "cooperative"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_graceful_shutdown_helper_runs_callbacks_and_exits_0(mode, sig) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HELPER, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["done"] == ["model released", "store closed"]  # newest first
    assert result["signal"] == sig
    assert result["steps"] < 100  # stopped early, not after the whole loop
