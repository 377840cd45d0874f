"""Slow clients cost connections, never other clients' turn: a synthesis slot is taken only
after the body is read, and a body that stalls is answered 408 (real service, loopback)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

BOUNDARY = "glmttsboundary"


def _stalled_upload(url: str) -> socket.socket:
    """Headers of a multipart synthesis promising 600 KB, then a few bytes, then silence."""
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port), timeout=30)
    head = (f"POST /v1/synthesize HTTP/1.1\r\nHost: {parsed.hostname}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: 600000\r\n\r\n")
    sock.sendall(head.encode() + f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
                                  f'name="text"\r\n\r\nHi'.encode())
    return sock


def _read_reply(sock: socket.socket) -> str:
    """The whole answer (headers and body may come in separate packets), until the server
    closes the connection."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode("latin-1")
        data += chunk


@pytest.mark.slow
def test_slow_uploads_do_not_lock_anyone_out(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "slow", "--max-pending", "2", "--body-timeout", "3",
                     "--preload")
    slow = []
    try:
        slow = [_stalled_upload(service.url) for _ in range(4)]  # twice the queue bound
        time.sleep(0.5)
        with service.client() as client:
            for i in range(3):  # normal clients are served meanwhile
                answer = client.post("/v1/synthesize", json={"text": f"Served {i}.", "seed": 1})
                assert answer.status_code == 200, answer.text
        for sock in slow:  # ... and the stalled bodies end with a 408
            reply = _read_reply(sock)
            assert reply.startswith("HTTP/1.1 408"), reply[:200]
            assert "stalled" in reply
    finally:
        for sock in slow:
            sock.close()
        code = service.stop()
    assert code == 0, service.output()
    assert "Traceback" not in service.output()


@pytest.mark.slow
def test_a_client_that_leaves_cancels_its_synthesis(tmp_path: Path, launch) -> None:
    """A synthesis whose client went away stops at the next sentence and is recorded as
    cancelled; the service goes on serving."""
    import httpx

    from monitoring import open_store

    service = launch(tmp_path / "cancel", "--preload")
    text = " ".join(f"This is sentence number {i} of a long text nobody will hear." for i in
                    range(60))
    try:
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout), service.client(timeout=1.0) as client:
            client.post("/v1/synthesize", json={"text": text, "seed": 1})
        deadline = time.monotonic() + 30
        event = None
        store = open_store(service.db)
        while time.monotonic() < deadline:
            events = store.events(kind="synthesis")
            if len(events):
                event = events.iloc[-1]
                break
            time.sleep(0.2)
        store.close()
        assert event is not None, "no synthesis event was recorded"
        assert event["error_type"].endswith("Cancelled")
        assert event["features"]["outcome"] == "cancelled"
        assert "after" in event["error_message"] and "of 60 sentences" in event["error_message"]
        assert event["duration_s"] < time.monotonic() - t0 + 1
        with service.client() as client:  # and it goes on serving
            assert client.post("/v1/synthesize", json={"text": "Still here."}).status_code == 200
    finally:
        code = service.stop()
    assert code == 0, service.output()
