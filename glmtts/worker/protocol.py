"""The engine worker's wire protocol, version 1. Standard library only; Python 3.10+.

Transport: one stream socket of a ``socket.socketpair()``; the app keeps one end, the worker
gets the other as an inherited file descriptor (``--fd N``). Standard output and error are not
part of the protocol (upstream code prints freely there).

Frame::

    4 bytes   big-endian unsigned length H of the header (1 .. MAX_HEADER_BYTES)
    H bytes   the header: one JSON object, UTF-8
    P bytes   the payload, P = header["payload_bytes"] (0 when absent): raw bytes

Every message the app sends is a request ``{"id": N, "op": NAME, "args": {...}}``; the worker
answers each with ``{"id": N, "ok": true, "result": {...}}`` or ``{"id": N, "ok": false,
"error": {...}}`` (see :func:`error_body`). Answers may come out of order: ``memory``,
``reset_peaks`` and ``ping`` are answered at once, even while a ``synthesize`` runs; every
other op runs in arrival order, one at a time.

The worker speaks first, unasked: a greeting ``{"id": 0, "ok": true, "result":
{"protocol": "glmtts-worker", "version": 1, "pid": ..., "python": "3.10.12", ...}}``. An app
that reads anything else (garbage, another protocol, another version) ends the worker.

Ops (arguments -> result):

- ``hello {engine, options}`` -> versions of Python, torch and numpy, CUDA (available, version,
  device count), ``missing`` (what this interpreter lacks for that engine, one line each; empty
  when it can run it)
- ``load {engine, options, device}`` -> ``{device, weights_bytes, seconds, capabilities}``
- ``check {engine, options, request}``; ``needs_reload {...}`` -> ``{needs_reload}``;
  ``reload_for {...}`` -> ``{switch, weights_bytes, capabilities}`` (each creates the
  engine when the worker has none yet, as ``capabilities`` does)
- ``capabilities {engine, options}`` -> the engine's declared capabilities
- ``synthesize {engine, options, request}`` -> ``{sample_rate, timings, wall_s, metadata,
  memory, samples}`` and the audio as float32 little-endian mono samples in the payload;
  ``memory`` is the worker's own torch allocator figures before, after and at the peak of the
  call
- ``memory {releasable}`` -> torch allocator figures now (keys as
  :data:`monitoring.torch_allocator.STAT_KEYS`), or ``{"unavailable": reason}``
- ``reset_peaks`` -> ``{reset}``
- ``cleanup {level}`` (``light`` or ``full``) -> what the steps did, and
  ``upstream_modules_left``
- ``shutdown`` -> ``{}``, then the worker exits
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

PROTOCOL = "glmtts-worker"
VERSION = 1
#: Largest header accepted (a request carries at most a 5,000-character text).
MAX_HEADER_BYTES = 16 << 20
#: Largest payload accepted: 10 minutes of 48 kHz float32 audio is 110 MiB.
MAX_PAYLOAD_BYTES = 1 << 30
_LENGTH = struct.Struct(">I")

#: Ops answered at once by the worker's reader thread, even during a synthesis.
QUICK_OPS = frozenset({"memory", "reset_peaks", "ping"})


class ProtocolError(Exception):
    """The other side sent something that is not a valid frame of this protocol."""


class Closed(Exception):
    """The other side closed the connection (or died)."""


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise Closed("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Read one frame: ``(header, payload)``.

    Raises:
        Closed: the other side closed the connection before a whole frame arrived.
        ProtocolError: the bytes are not a frame of this protocol.
    """
    (size,) = _LENGTH.unpack(_read_exact(sock, _LENGTH.size))
    if not 0 < size <= MAX_HEADER_BYTES:
        raise ProtocolError(f"a header of {size} bytes is outside 1..{MAX_HEADER_BYTES}")
    raw = _read_exact(sock, size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("the header is not a JSON object")
    payload_bytes = header.get("payload_bytes", 0)
    if not isinstance(payload_bytes, int) or not 0 <= payload_bytes <= MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload_bytes {payload_bytes!r} is outside "
                            f"0..{MAX_PAYLOAD_BYTES}")
    payload = _read_exact(sock, payload_bytes) if payload_bytes else b""
    return header, payload


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame's bytes (``payload_bytes`` is set from ``payload``)."""
    body = dict(header)
    if payload:
        body["payload_bytes"] = len(payload)
    raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"a header of {len(raw)} bytes is too large")
    return _LENGTH.pack(len(raw)) + raw + payload


def error_body(kind: str, message: str, *, error_class: str | None = None,
               field: str | None = None, poisoned: bool = False,
               details: str | None = None) -> dict[str, Any]:
    """The ``error`` object of a failed answer.

    Args:
        kind: ``invalid`` (a request field; ``field`` names it), ``oom`` (out of memory),
            ``engine`` (a typed error of ours, ``error_class`` names it), ``protocol`` (a bad
            request) or ``internal`` (anything else; ``details`` holds the traceback's end).
        message: One line for the user.
        poisoned: The worker's CUDA context is unusable after this error: end the worker.
    """
    return {"kind": kind, "message": message, "class": error_class, "field": field,
            "poisoned": poisoned, "details": details}


def greeting(**facts: Any) -> dict[str, Any]:
    """The worker's first frame."""
    return {"id": 0, "ok": True, "result": {"protocol": PROTOCOL, "version": VERSION, **facts}}


def check_greeting(header: dict[str, Any]) -> dict[str, Any]:
    """The greeting's facts, or :class:`ProtocolError` saying what is wrong with it."""
    result = header.get("result") if header.get("id") == 0 and header.get("ok") else None
    if not isinstance(result, dict) or result.get("protocol") != PROTOCOL:
        raise ProtocolError("the first message is not a glmtts-worker greeting")
    if result.get("version") != VERSION:
        raise ProtocolError(f"the worker speaks protocol version {result.get('version')!r}; "
                            f"this app speaks {VERSION}: start the app and the worker from "
                            f"the same checkout of this project")
    return result
