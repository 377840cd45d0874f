"""Typed errors of the monitoring package.

Two kinds of failure (see STYLE.md): a background read (sampler thread, snapshot fields) returns
``None`` and logs once; an explicit call raises one of these errors.
"""

from __future__ import annotations


class MonitoringError(Exception):
    """Base class of every error raised by ``monitoring``."""


class ProbeUnavailableError(MonitoringError):
    """A probe was asked for figures it cannot produce on this machine.

    Attributes:
        reason: A sentence saying why (no driver, no permission, no CUDA...).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NvmlUnavailableError(ProbeUnavailableError):
    """NVML cannot be used: no library, no driver, no permission, or no GPU."""


class CudaUnavailableError(ProbeUnavailableError):
    """The torch CUDA allocator cannot be read: torch not imported or CUDA not available."""


class ProbeReadError(MonitoringError):
    """A probe that was available failed while reading (GPU lost, driver unloaded...)."""


class StoreError(MonitoringError):
    """The event store cannot be opened or written.

    Attributes:
        path: The database path the store was opened with.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} (store: {path})")
        self.path = path


class StoreReadOnlyError(StoreError):
    """The database file or its folder is not writable by this process."""


class StoreLockedError(StoreError):
    """Another connection holds a lock on the database longer than the busy timeout."""


class StoreCorruptError(StoreError):
    """The file is not an SQLite database, or its pages are damaged."""


class StoreSchemaError(StoreError):
    """The database is not this code's to write: a newer schema version, or another
    program's SQLite file."""


class SnapshotUnavailableError(MonitoringError):
    """A CUDA memory snapshot was asked for where there is none to take (no CUDA, or CUDA not
    initialised yet)."""
