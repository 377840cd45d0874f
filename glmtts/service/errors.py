"""Typed errors of the service package (all :class:`~glmtts.errors.GlmTtsError`)."""

from __future__ import annotations

from glmtts.errors import GlmTtsError


class ServiceConfigError(GlmTtsError):
    """The service cannot start with these settings (e.g. a public address without a token)."""


class SnapshotUnavailableError(GlmTtsError):
    """A CUDA memory snapshot was asked for where there is none to take (no CUDA, or CUDA not
    initialised yet)."""


class BusyError(GlmTtsError):
    """Too many syntheses are already waiting for the device; retry later."""
