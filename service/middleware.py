"""ASGI middleware of the service: the access token, and request body limits (413).

Both are plain ASGI (no Starlette ``BaseHTTPMiddleware``): they answer before the application
sees the request, so an unauthenticated or oversized request costs neither a body read nor a
route call.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How much of an oversized body is read (and dropped) before the 413 goes out, so that an
#: ordinary client that is still sending sees the answer rather than a reset connection.
DRAIN_LIMIT = 4 * 1024 * 1024


class BodyTooLargeError(Exception):
    """The request body passed its limit while the application was reading it."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit:,} bytes")
        self.limit = limit


class BodyStalledError(Exception):
    """The client sent no byte of its request body for longer than the idle limit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body stalled: no byte arrived for {seconds:g} s; send "
                         f"the whole request at once")
        self.seconds = seconds


async def _receive_within(receive: Receive, seconds: float | None) -> Message:
    if seconds is None:
        return await receive()
    try:
        return await asyncio.wait_for(receive(), seconds)
    except TimeoutError:
        raise BodyStalledError(seconds) from None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def send_error(send: Send, status: int, message: str, *, field: str | None = None,
                     headers: dict[str, str] | None = None) -> None:
    """Send a JSON error ``{"error": message, "field": field}`` with ``status``."""
    body = json.dumps({"error": message, "field": field}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class TokenAuth:
    """Refuses HTTP requests without ``Authorization: Bearer <token>`` (401).

    Args:
        app: The wrapped application.
        token: The expected token; None lets everything through.
        public_paths: Paths served without the token (e.g. ``/metrics``).
    """

    def __init__(self, app: ASGIApp, *, token: str | None,
                 public_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self._expected = token.encode() if token is not None else None
        self.public_paths = public_paths

    def allowed(self, scope: Scope) -> bool:
        """Whether the request may pass."""
        if self._expected is None or scope.get("path") in self.public_paths:
            return True
        given = _header(scope, b"authorization") or b""
        scheme, _, credentials = given.strip().partition(b" ")
        # RFC 9110: the scheme is case-insensitive ("bearer", "Bearer", "BEARER")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(),
                                                                    self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        await send_error(send, 401, "this service needs its token: send the header "
                                    "'Authorization: Bearer <token>'",
                         headers={"WWW-Authenticate": 'Bearer realm="glmtts"'})


class BodyLimit:
    """Answers 413 to request bodies above a limit.

    Non-multipart bodies (JSON) are read here in full, up to ``max_body_bytes``, and replayed
    to the application, so nothing downstream ever meets an oversized body. Multipart bodies
    (uploads, up to ``max_upload_bytes``) stream through, counted; when the count passes the
    limit the application's read raises :class:`BodyTooLargeError` and the answer is 413.

    A body whose next chunk does not arrive within ``body_timeout_s`` is answered 408 (a
    client trickling bytes holds a connection, never a synthesis slot: the service admits a
    synthesis only after its body has been read and checked).

    Args:
        app: The wrapped application.
        max_body_bytes: Limit of non-multipart bodies.
        max_upload_bytes: Limit of multipart bodies.
        body_timeout_s: Longest wait for the next chunk of a body (None: no limit).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int,
                 body_timeout_s: float | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        content_type = (_header(scope, b"content-type") or b"").decode("latin-1").lower()
        multipart = content_type.startswith("multipart/")
        limit = self.max_upload_bytes if multipart else self.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            text = declared.decode("latin-1").strip()
            if not text.isdigit():
                await send_error(send, 400, f"bad Content-Length header {text!r}")
                return
            if int(text) > limit:
                if int(text) <= limit + DRAIN_LIMIT:
                    await _drain(receive, limit + DRAIN_LIMIT)
                await send_error(send, 413, _too_large(limit, multipart))
                return
        if multipart:
            await self._stream(scope, receive, send, limit)
        else:
            await self._buffered(scope, receive, send, limit)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await _receive_within(receive, self.body_timeout_s)
            except BodyStalledError as exc:
                await send_error(send, 408, str(exc), headers={"Connection": "close"})
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _drain(receive, DRAIN_LIMIT)
                await send_error(send, 413, _too_large(limit, False))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        size = 0
        started = False

        async def counted() -> Message:
            nonlocal size
            message = await _receive_within(receive, self.body_timeout_s)
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLargeError:
            if started:
                raise
            await _drain(receive, DRAIN_LIMIT)
            await send_error(send, 413, _too_large(limit, True))
        except BodyStalledError as exc:
            if started:
                raise
            await send_error(send, 408, str(exc), headers={"Connection": "close"})


def _too_large(limit: int, multipart: bool) -> str:
    what = "multipart request (upload and fields)" if multipart else "request body"
    return f"the {what} is larger than the limit of {limit:,} bytes"


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop what the client still sends, up to ``budget`` bytes."""
    read = 0
    while read <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
