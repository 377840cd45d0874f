"""Typed errors of the service package (all :class:`~glmtts.errors.GlmTtsError`; a memory
snapshot that cannot be taken is :class:`monitoring.errors.SnapshotUnavailableError`)."""

from __future__ import annotations

from glmtts.errors import GlmTtsError


class ServiceConfigError(GlmTtsError):
    """The service cannot start with these settings (e.g. a public address without a token)."""


class BusyError(GlmTtsError):
    """Too many syntheses are already waiting for the device; retry later.

    Attributes:
        retry_after_s: Seconds to wait before retrying (``Retry-After``), estimated from
            measured durations.
    """

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
