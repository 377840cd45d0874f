"""Cleanup actions, measured: what each one freed, per probe, and how long it took.

- :func:`light`: ``gc.collect()``, ``torch.cuda.empty_cache()`` where torch uses CUDA, and glibc
  ``malloc_trim(0)`` on Linux (glibc keeps freed small blocks; RSS drops only after a trim).
  Models stay loaded.
- :func:`full`: the caller's ``release()`` (drop the model and the engine's caches), then light.

Each runs inside :meth:`Tracker.track` as a ``cleanup`` event, so it is stored and marked like
any other event when the tracker has a store and a sampler.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitoring.records import EventRecord
from monitoring.tracker import Tracker

if TYPE_CHECKING:
    from collections.abc import Callable

_log = logging.getLogger(__name__)


def _freed(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else before - after


@dataclass(frozen=True)
class CleanupResult:
    """What one cleanup did.

    Attributes:
        level: ``"light"`` or ``"full"``.
        event: The tracked ``cleanup`` event (before/after snapshots, duration, peaks).
        gc_collected: Objects ``gc.collect()`` found unreachable.
        empty_cache_called: Whether ``torch.cuda.empty_cache()`` ran (only where CUDA is in use).
        malloc_trimmed: ``malloc_trim(0)``'s answer (True: memory went back to the OS), or None
            where there is no glibc.
    """

    level: str
    event: EventRecord
    gc_collected: int
    empty_cache_called: bool
    malloc_trimmed: bool | None

    @property
    def duration_s(self) -> float:
        """Seconds the cleanup took (release included for a full cleanup)."""
        return self.event.duration_s

    @property
    def host_rss_freed_bytes(self) -> int | None:
        """Host RSS before minus after (negative: it grew)."""
        return _freed(self.event.before.host_rss_bytes, self.event.after.host_rss_bytes)

    @property
    def torch_allocated_freed_bytes(self) -> int | None:
        """torch allocator: live-tensor bytes freed (by ``release``; light frees none)."""
        before, after = self.event.before, self.event.after
        return _freed(before.torch_allocated_bytes, after.torch_allocated_bytes)

    @property
    def torch_reserved_freed_bytes(self) -> int | None:
        """torch allocator: reserved bytes returned to CUDA."""
        return _freed(self.event.before.torch_reserved_bytes, self.event.after.torch_reserved_bytes)

    @property
    def nvml_process_freed_bytes(self) -> int | None:
        """NVML this process: bytes the driver no longer charges to this process."""
        before, after = self.event.before, self.event.after
        return _freed(before.nvml_process_used_bytes, after.nvml_process_used_bytes)

    @property
    def nvml_device_freed_bytes(self) -> int | None:
        """NVML device-wide: bytes freed on the GPU (other processes may blur this)."""
        before, after = self.event.before, self.event.after
        return _freed(before.nvml_device_used_bytes, after.nvml_device_used_bytes)

    @property
    def predicted_releasable_bytes(self) -> int | None:
        """torch allocator: what ``empty_cache()`` could free when the cleanup started."""
        return self.event.before.torch_releasable_bytes


@functools.cache
def _glibc() -> Any:
    """glibc loaded through ctypes (once), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as err:
        _log.info("no glibc, so no malloc_trim: %s", err)
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def malloc_trim() -> bool | None:
    """Ask glibc to return free heap memory to the OS; None where there is no glibc."""
    libc = _glibc()
    return None if libc is None else bool(libc.malloc_trim(0))


def _empty_cache() -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return False
    torch.cuda.empty_cache()
    return True


def _light_steps() -> dict[str, Any]:
    collected = gc.collect()
    return {
        "gc_collected": collected,
        "empty_cache_called": _empty_cache(),
        "malloc_trimmed": malloc_trim(),
    }


def _run(
    level: str, release: Callable[[], object] | None, tracker: Tracker | None
) -> CleanupResult:
    tracker = tracker if tracker is not None else Tracker()
    with tracker.track("cleanup", level, releasable=True, level=level) as handle:
        if release is not None:
            release()
        steps = _light_steps()
        handle.set(**steps)
    assert handle.record is not None
    return CleanupResult(level=level, event=handle.record, **steps)


def light(*, tracker: Tracker | None = None) -> CleanupResult:
    """gc, ``empty_cache`` and ``malloc_trim``; the model stays loaded.

    Args:
        tracker: Records the cleanup event (store, sampler markers); a bare one by default.
    """
    return _run("light", None, tracker)


def full(release: Callable[[], object], *, tracker: Tracker | None = None) -> CleanupResult:
    """``release()`` (drop the model and engine caches), then the light steps.

    An exception from ``release`` is recorded in the cleanup event and re-raised.

    Args:
        release: Drops the caller's references to the model and its caches.
        tracker: Records the cleanup event; a bare one by default.
    """
    return _run("full", release, tracker)
