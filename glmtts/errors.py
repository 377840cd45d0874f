"""Typed errors of the TTS side. Each message tells the user what to do about it."""

from __future__ import annotations


class GlmTtsError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidRequestError(GlmTtsError, ValueError):
    """A synthesis request field is unusable (empty text, bad sample rate, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class DtypeUnsupportedError(InvalidRequestError):
    """The chosen weight precision (``dtype``) is one the device cannot run usefully; the
    message says why and what to choose instead (field ``dtype``)."""

    def __init__(self, message: str) -> None:
        super().__init__("dtype", message)


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


class WorkerError(GlmTtsError):
    """An engine worker process failed: it could not start, died, hung, or spoke garbage.

    Attributes:
        outcome: A short tag for the event store (``worker-died``, ``worker-timeout``,
            ``worker-protocol``, ``worker-start``, ``worker-error``).
    """

    outcome = "worker-error"


class WorkerStartError(WorkerError):
    """The worker's interpreter is missing, not executable, too old, or lacks what it needs."""

    outcome = "worker-start"


class WorkerDiedError(WorkerError):
    """The worker process ended while a call was outstanding (killed, crashed)."""

    outcome = "worker-died"


class WorkerTimeoutError(WorkerError):
    """The worker did not answer in time; it was ended."""

    outcome = "worker-timeout"


class WorkerProtocolError(WorkerError):
    """The worker sent something that is not this app's protocol (or another version)."""

    outcome = "worker-protocol"


#: torch's CPU allocator message when an allocation fails.
_CPU_OOM = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means an allocation failed for lack of memory (the one test of the TTS
    side, used by the engines, the worker and the session).

    True for ``MemoryError`` (and so for an out-of-memory error a worker reported),
    ``torch.OutOfMemoryError`` / ``torch.cuda.OutOfMemoryError`` (when torch is imported), and
    a ``RuntimeError`` whose message says a CUDA or CPU allocation ran out of memory (older
    torch, and code that re-raises the message as a plain ``RuntimeError``).
    """
    import sys

    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is None and torch is not None:
        oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return _CPU_OOM in text or "CUDA out of memory" in text or (
            "out of memory" in text.lower() and "CUDA" in text)
    return False
