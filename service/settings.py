"""What the service is started with, and the rule that keeps it private by default."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from glmtts import idle
from glmtts.request import MAX_TEXT_CHARS
from service.admission import DEFAULT_UNSEEN_PEAK_BYTES
from service.errors import ServiceConfigError

#: Environment variable holding the access token (``--token`` wins over it).
TOKEN_ENV = "GLMTTS_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Largest JSON (or other non-multipart) request body, in bytes: a text of MAX_TEXT_CHARS
#: characters written as ``\uXXXX`` escapes, twice (text and reference transcript), fits.
DEFAULT_MAX_BODY_BYTES = 256 * 1024
#: Largest multipart request (reference audio upload and fields), in bytes.
DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024
#: Syntheses that may wait for the device at once; more are answered 429.
DEFAULT_MAX_PENDING = 16
#: Open connections one client address may hold (0: no cap); behind a proxy, raise or turn off.
DEFAULT_MAX_PER_CLIENT = 32
#: Seconds a request body may stall between chunks (408 above).
DEFAULT_BODY_TIMEOUT_S = 20.0
#: Seconds a client has to send a whole request head (request line and headers).
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Entries of the CUDA memory history ring (each a few KB with Python stacks).
DEFAULT_MEMORY_HISTORY = 100_000
#: Idle seconds before each release tier: light cleanup, model unloaded, worker restarted.
DEFAULT_IDLE_TIERS = (300.0, 900.0, 3600.0)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1,
    ``localhost``). Any other name counts as public: it may resolve anywhere."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of one service process.

    Attributes:
        host: Address to bind; loopback by default. Any other address needs ``token``.
        port: TCP port.
        engine: Engine name; the service holds one model of it.
        engine_options: Passed to the engine (e.g. ``{"voice": ...}``).
        isolate: Run the engine in a worker process (None: the engine's default; glm-tts
            always runs in one).
        python: The worker's interpreter (None: ``$GLMTTS_PYTHON`` and so on).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        token: Access token checked on every request (``Authorization: Bearer <token>``), except
            ``/metrics`` when ``metrics_public``; None: no check (loopback only).
        metrics_public: Serve ``/metrics`` without the token.
        db: Event store path (``:memory:`` allowed); None: ``$GLMTTS_DB`` or the default file.
        preload: Load the model at start instead of on the first synthesis.
        max_text_chars: Longest text (and reference transcript) a request may carry, in
            characters as sent; at most :data:`~glmtts.request.MAX_TEXT_CHARS`.
        max_body_bytes: Largest non-multipart request body (413 above).
        max_upload_bytes: Largest multipart request (413 above).
        body_timeout_s: Longest wait for the next chunk of a request body (408 above).
        max_pending: Syntheses allowed to wait for the device at once (429 above).
        header_timeout_s: Longest time to receive a request's line and headers (408, closed).
        max_per_client: Open connections allowed per client address (429 above; 0: no cap).
        memory_history: CUDA memory history ring size (entries); 0 turns recording off. Only
            used on CUDA.
        graceful_timeout_s: On SIGINT/SIGTERM, how long running requests may finish.
        access_log: Log every request (uvicorn's access log).
        memory_budget_bytes: Cap of the admission's memory budget (None: the device's free
            memory alone); see :mod:`service.admission`.
        unseen_peak_bytes: Predicted demand of a request before any usable history.
        idle_tiers: Idle seconds before a light cleanup, unloading the model and restarting
            the worker (increasing; empty: no idle release); see :mod:`service.idle`.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    engine: str = "piper"
    engine_options: dict[str, Any] = field(default_factory=dict)
    isolate: bool | None = None
    python: str | None = None
    device: str = "auto"
    token: str | None = None
    metrics_public: bool = True
    db: str | None = None
    preload: bool = False
    max_text_chars: int = MAX_TEXT_CHARS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_pending: int = DEFAULT_MAX_PENDING
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_per_client: int = DEFAULT_MAX_PER_CLIENT
    memory_history: int = DEFAULT_MEMORY_HISTORY
    graceful_timeout_s: float = 2.5
    access_log: bool = False
    memory_budget_bytes: int | None = None
    unseen_peak_bytes: int = DEFAULT_UNSEEN_PEAK_BYTES
    idle_tiers: tuple[float, ...] = DEFAULT_IDLE_TIERS

    def check(self) -> None:
        """Refuse settings the service must not run with.

        Raises:
            ServiceConfigError: a non-loopback address without a token, an empty token, or a
                limit out of range.
        """
        if self.token is not None and not self.token.strip():
            raise ServiceConfigError("the token is empty: give a non-empty --token or "
                                     f"{TOKEN_ENV}")
        if not is_loopback(self.host) and self.token is None:
            raise ServiceConfigError(
                f"refusing to listen on {self.host}, which other machines can reach, without "
                f"a token: pass --token or set {TOKEN_ENV} (or bind 127.0.0.1)")
        if not 0 <= self.port <= 65535:
            raise ServiceConfigError(f"the port must be between 0 and 65535, not {self.port}")
        if not 1 <= self.max_text_chars <= MAX_TEXT_CHARS:
            raise ServiceConfigError(f"--max-text-chars must be between 1 and "
                                     f"{MAX_TEXT_CHARS}, not {self.max_text_chars}")
        for name in ("max_body_bytes", "max_upload_bytes", "max_pending"):
            if getattr(self, name) < 1:
                raise ServiceConfigError(f"{name} must be at least 1")
        for name in ("body_timeout_s", "header_timeout_s"):
            if not getattr(self, name) > 0:
                raise ServiceConfigError(f"{name} must be a positive number of seconds")
        if self.max_per_client < 0:
            raise ServiceConfigError("--max-per-client must be 0 (no cap) or a number of "
                                     "connections")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes < 1:
            raise ServiceConfigError("--memory-budget must be a positive size")
        if self.unseen_peak_bytes < 1:
            raise ServiceConfigError("--unseen-peak must be a positive size")
        check_tiers(self.idle_tiers)
        if self.memory_history < 0:
            raise ServiceConfigError("--memory-history must be 0 (off) or a number of entries")


def check_tiers(tiers: tuple[float, ...]) -> None:
    """Refuse idle tiers that are not 1-3 positive, increasing numbers of seconds
    (:func:`glmtts.idle.check_tiers`).

    Raises:
        ServiceConfigError: they are not.
    """
    try:
        idle.check_tiers(tiers)
    except ValueError as exc:
        raise ServiceConfigError(f"--idle-tiers: {exc}") from None


def parse_tiers(text: str) -> tuple[float, ...]:
    """``300,900,3600`` -> (300.0, 900.0, 3600.0); ``off`` (or empty) -> ()
    (:func:`glmtts.idle.parse_tiers`).

    Raises:
        ServiceConfigError: not numbers, or not valid tiers.
    """
    try:
        return idle.parse_tiers(text)
    except ValueError as exc:
        raise ServiceConfigError(f"--idle-tiers: {exc}") from None


def token_from_env(given: str | None) -> str | None:
    """``given`` if set, else ``$GLMTTS_TOKEN`` if set and not empty, else None."""
    if given is not None:
        return given
    value = os.environ.get(TOKEN_ENV)
    return value if value else None
