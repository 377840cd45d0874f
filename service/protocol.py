"""The service's HTTP/1.1 connections: a deadline for request headers, a cap per client address.

uvicorn's h11 protocol times out idle keep-alive connections but not a request whose headers
arrive a byte at a time (slowloris), and caps connections only globally. The subclass built by
:func:`guarded_protocol` adds both:

- a connection whose request line and headers are not complete ``header_timeout_s`` after it
  opened (or after its previous response) gets ``408`` and is closed;
- an address that already holds ``max_per_client`` open connections gets ``429`` on the next
  one, which is closed at once; other addresses are served as usual.

Behind a reverse proxy every client shares the proxy's address: raise the cap there, or set it
to 0 (off) and let the proxy limit clients.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _raw_response(status: int, reason: str, message: str,
                  extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = json.dumps({"error": message, "field": None}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    head += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def guarded_protocol(header_timeout_s: float | None, max_per_client: int) -> type[H11Protocol]:
    """A uvicorn HTTP protocol class with a header deadline and a per-address connection cap.

    Args:
        header_timeout_s: Seconds a client has to send a whole request head (None: no limit).
        max_per_client: Open connections allowed per client address (0: no cap).
    """
    open_per_address: Counter[str] = Counter()
    late = _raw_response(408, "Request Timeout",
                         f"the request headers did not arrive within {header_timeout_s:g} s")
    busy = _raw_response(429, "Too Many Requests",
                         f"this address already holds {max_per_client} open connections; "
                         f"wait for one to finish", (("retry-after", "1"),))

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a header deadline and a per-address connection cap."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._address: str | None = None
            self._deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else None
            if max_per_client and address is not None:
                if open_per_address[address] >= max_per_client:
                    transport.write(busy)
                    transport.close()
                    return
                open_per_address[address] += 1
                self._address = address
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._address is not None:
                open_per_address[self._address] -= 1
                if open_per_address[self._address] <= 0:
                    del open_per_address[self._address]
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the request head is complete (body limits are the app's)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on this connection gets its own deadline

        def _arm(self) -> None:
            self._disarm()
            if header_timeout_s is not None:
                self._deadline = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # closed already, or the head arrived (the body has its own limit)
            if self.cycle is None or self.cycle.response_complete:
                # nothing or only part of a request head arrived: answer and hang up
                if self._partial_head():
                    self.transport.write(late)
                self.transport.close()

        def _partial_head(self) -> bool:
            """Whether some bytes of a new request arrived (an idle keep-alive connection is
            closed without an answer, as uvicorn does)."""
            return bool(self.conn.trailing_data[0])

    return GuardedH11Protocol
