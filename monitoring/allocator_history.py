"""CUDA memory history for pytorch.org/memory_viz: record in a bounded ring, tag, download.

PyTorch's caching allocator can record every allocation and free with its Python stack
(``torch.cuda.memory._record_memory_history``, a private but documented API). The recording is a
ring of ``max_entries`` events, so memory use stays bounded however long the process runs. A
snapshot (``torch.cuda.memory._snapshot()``, pickled as ``_dump_snapshot`` does) holds the
current segments and that ring; drop the file on https://pytorch.org/memory_viz to see which
code holds which block. Events recorded inside :meth:`MemoryHistory.tagged` carry its label
(``_set_memory_metadata``, per thread), e.g. the synthesis id.

Generic allocator monitoring (no Streamlit, no HTTP, nothing of the model): the service's
``GET /v1/memory/snapshot`` and the Monitor page's download both use :class:`MemoryHistory`.
torch is never imported here (only read from ``sys.modules``), and nothing here creates a CUDA
context unless :meth:`MemoryHistory.start` is called on CUDA.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from monitoring.errors import SnapshotUnavailableError
from monitoring.i18n import N_
from monitoring.imported import imported_torch

log = logging.getLogger(__name__)

#: Ring size used when none is given (each entry is a few KB with Python stacks).
DEFAULT_MAX_ENTRIES = 100_000
MEDIA_TYPE = "application/octet-stream"


def _torch() -> ModuleType:
    """The torch this process imported (monitoring never imports it: a process that has not
    imported torch holds no CUDA allocator to record)."""
    torch = imported_torch()
    if torch is None:
        raise SnapshotUnavailableError("memory snapshots need CUDA, and this process has not "
                                       "imported torch")
    return torch


def unavailable_reason() -> str | None:
    """Why no memory snapshot can be taken in this process, or None when it can."""
    torch = imported_torch()
    if torch is None:
        return N_("memory snapshots need CUDA, and this process has not imported torch")
    if not torch.cuda.is_available():
        return N_("memory snapshots need CUDA: this process runs without a GPU (torch reports "
                  "CUDA unavailable), so there is no CUDA caching allocator to record")
    if not torch.cuda.is_initialized():
        return N_("CUDA is not initialised in this process yet: nothing has been allocated on "
                  "the GPU")
    return None


def snapshot_filename() -> str:
    """A file name for a downloaded snapshot, e.g. ``memory-snapshot-20260101-120000.pickle``."""
    return time.strftime("memory-snapshot-%Y%m%d-%H%M%S.pickle")


class MemoryHistory:
    """Records the CUDA allocator's history in a bounded ring and serves snapshots of it.

    Args:
        max_entries: Events kept in the ring (older ones are dropped by PyTorch).
        stacks: ``"python"`` (cheaper) or ``"all"`` (with C++ frames) stack traces per event.

    Attributes:
        recording: Whether this object started the recording and has not stopped it.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, *, stacks: str = "python") -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if stacks not in ("python", "all"):
            raise ValueError("stacks must be 'python' or 'all'")
        self.max_entries = max_entries
        self.stacks = stacks
        self.recording = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start recording (initialises CUDA in this process).

        Raises:
            SnapshotUnavailableError: CUDA is not available.
        """
        torch = _torch()
        if not torch.cuda.is_available():
            raise SnapshotUnavailableError(unavailable_reason() or "CUDA is not available")
        with self._lock:
            torch.cuda.memory._record_memory_history(
                enabled="all", context="all", stacks=self.stacks, max_entries=self.max_entries)
            self.recording = True
        log.info("recording CUDA memory history (ring of %d entries)", self.max_entries)

    def stop(self) -> None:
        """Stop recording (idempotent)."""
        with self._lock:
            if not self.recording:
                return
            self.recording = False
            _torch().cuda.memory._record_memory_history(enabled=None)

    @contextmanager
    def tagged(self, label: str) -> Iterator[None]:
        """Tag the allocations this thread makes inside the block with ``label``."""
        if not self.recording:
            yield
            return
        memory = _torch().cuda.memory
        memory._set_memory_metadata(label)
        try:
            yield
        finally:
            memory._set_memory_metadata("")

    def snapshot(self) -> dict:
        """The allocator's segments and the recorded ring, as ``torch.cuda.memory._snapshot()``.

        Raises:
            SnapshotUnavailableError: no CUDA, or CUDA not initialised yet.
        """
        reason = unavailable_reason()
        if reason is not None:
            raise SnapshotUnavailableError(reason)
        return _torch().cuda.memory._snapshot()

    def snapshot_bytes(self) -> bytes:
        """The snapshot pickled, exactly as ``torch.cuda.memory._dump_snapshot`` writes it."""
        return pickle.dumps(self.snapshot())

    def write(self, path: str | Path) -> Path:
        """Write the snapshot pickle to ``path``; return the path."""
        target = Path(path)
        target.write_bytes(self.snapshot_bytes())
        return target
