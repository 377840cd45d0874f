"""Typed errors of the TTS side. Each message tells the user what to do about it."""

from __future__ import annotations


class GlmTtsError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidRequestError(GlmTtsError, ValueError):
    """A synthesis request field is unusable (empty text, bad sample rate, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class VoiceError(GlmTtsError):
    """A voice (model file and its config) is missing, unreadable or inconsistent."""


class DeviceUnavailableError(GlmTtsError):
    """The requested compute device does not exist on this machine."""


class EngineNotLoadedError(GlmTtsError):
    """``synthesize`` was called before ``load`` (or after ``unload``)."""


class UnknownEngineError(GlmTtsError, KeyError):
    """No engine of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutOfMemoryError(GlmTtsError):
    """A synthesis ran out of memory, and so did its retry after a full cleanup."""
