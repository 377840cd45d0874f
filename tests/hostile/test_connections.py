"""Connections that hold the service hostage: request heads sent a byte at a time (slowloris)
and one address opening connection after connection (real service process, loopback).

Client addresses other than 127.0.0.1 are other loopback addresses (127.0.0.2, ...): Linux
routes all of 127.0.0.0/8 to this machine, so they stand for distinct clients.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest


def _connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    parsed = urlparse(url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=30,
                                    source_address=(source, 0))


def _reply(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data.decode("latin-1")


def _get(sock: socket.socket, path: str = "/v1/health") -> str:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return _reply(sock)


@pytest.mark.slow
def test_request_heads_that_trickle_are_answered_408_and_closed(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "loris", "--header-timeout", "2")
    head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 40
    trickling = [_connect(service.url) for _ in range(10)]
    silent = _connect(service.url)  # connects and never sends a byte
    try:
        t0 = time.monotonic()
        for i in range(6):  # a byte per connection every 0.5 s: past the 2 s deadline
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.sendall(head[i:i + 1])
            time.sleep(0.5)
        # meanwhile (and after) ordinary clients are served
        assert httpx.get(f"{service.url}/v1/health", timeout=10).status_code == 200
        for sock in trickling:
            reply = _reply(sock)
            assert reply.startswith("HTTP/1.1 408"), reply[:200]
            assert "headers did not arrive within 2 s" in reply
        assert _reply(silent) == ""  # an idle connection is simply closed
        assert time.monotonic() - t0 < 25  # closed by the server, not by our socket timeout
    finally:
        for sock in [*trickling, silent]:
            sock.close()
        code = service.stop()
    assert code == 0, service.output()
    assert "Traceback" not in service.output()


@pytest.mark.slow
def test_one_address_cannot_take_every_connection(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "greedy", "--max-per-client", "4", "--header-timeout", "30")
    greedy = [_connect(service.url, "127.0.0.2") for _ in range(4)]
    try:
        time.sleep(0.3)  # the server has accepted all four
        fifth = _connect(service.url, "127.0.0.2")
        reply = _reply(fifth)
        fifth.close()
        assert reply.startswith("HTTP/1.1 429"), reply[:200]
        assert "already holds 4 open connections" in reply
        assert "retry-after: 1" in reply.lower()
        # another address is served as usual
        assert _get(_connect(service.url, "127.0.0.3")).startswith("HTTP/1.1 200")
        # one connection closed: the greedy address gets its turn back
        greedy.pop().close()
        time.sleep(0.3)
        assert _get(_connect(service.url, "127.0.0.2")).startswith("HTTP/1.1 200")
    finally:
        for sock in greedy:
            sock.close()
        code = service.stop()
    assert code == 0, service.output()
    assert "Traceback" not in service.output()
