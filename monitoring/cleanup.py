"""Cleanup actions, measured: what each one freed, per probe, and how long it took.

- :func:`light`: ``gc.collect()``, ``torch.cuda.empty_cache()`` where torch uses CUDA, and glibc
  ``malloc_trim(0)`` on Linux (glibc keeps freed small blocks; RSS drops only after a trim).
  Models stay loaded.
- :func:`full`: the caller's ``release()`` (drop the model and the engine's caches), then light.
- :func:`measured`: any other action, e.g. one that runs in another process (an engine worker's
  light or full cleanup, or ending the worker: *restart*); the tracker's probes then watch that
  process, and the action returns what its steps did.

Each runs inside :meth:`Tracker.track` as a ``cleanup`` event, so it is stored and marked like
any other event when the tracker has a store and a sampler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitoring.records import EventRecord
from monitoring.release import light_steps, malloc_trim
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
        level: ``"light"``, ``"full"`` or ``"restart"``.
        event: The tracked ``cleanup`` event (before/after snapshots, duration, peaks).
        gc_collected: Objects ``gc.collect()`` found unreachable (None: no gc ran, e.g. a
            restart).
        empty_cache_called: Whether ``torch.cuda.empty_cache()`` ran (only where CUDA is in use).
        malloc_trimmed: ``malloc_trim(0)``'s answer (True: memory went back to the OS), or None
            where there is no glibc or no trim ran.
        details: Further facts the action reported (e.g. the PID of the process it ran in).
    """

    level: str
    event: EventRecord
    gc_collected: int | None
    empty_cache_called: bool
    malloc_trimmed: bool | None
    details: dict[str, Any] = field(default_factory=dict)

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


_STEPS = ("gc_collected", "empty_cache_called", "malloc_trimmed")


def measured(
    level: str, action: Callable[[], dict[str, Any]], tracker: Tracker | None = None
) -> CleanupResult:
    """Run ``action`` as a tracked ``cleanup`` event of ``level``.

    Args:
        level: Name of the level (``light``, ``full``, ``restart``...).
        action: Does the work and returns what it did: any of ``gc_collected``,
            ``empty_cache_called``, ``malloc_trimmed`` plus further details (JSON values).
        tracker: Records the event; its probes must watch the process the action frees.
    """
    tracker = tracker if tracker is not None else Tracker()
    with tracker.track("cleanup", level, releasable=True, level=level) as handle:
        done = dict(action())
        handle.set(**done)
    assert handle.record is not None
    return CleanupResult(
        level=level,
        event=handle.record,
        gc_collected=done.pop("gc_collected", None),
        empty_cache_called=bool(done.pop("empty_cache_called", False)),
        malloc_trimmed=done.pop("malloc_trimmed", None),
        details=done,
    )


def _run(
    level: str, release: Callable[[], object] | None, tracker: Tracker | None
) -> CleanupResult:
    def action() -> dict[str, Any]:
        if release is not None:
            release()
        return light_steps()

    return measured(level, action, tracker)


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


__all__ = ["CleanupResult", "full", "light", "malloc_trim", "measured"]
