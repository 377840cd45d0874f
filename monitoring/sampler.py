"""Live sampler: a daemon thread that reads the cheap probes at a fixed rate into a ring buffer.

The buffer is bounded (``collections.deque(maxlen=...)``): memory use never grows past it. Markers
(event starts and ends) sit in a second bounded buffer for charts. Peak windows let a tracker ask
"what was the largest NVML / RSS figure since t0". Optionally the sampler writes a downsampled
timeline (one row per ``persist_interval_s``) to a :class:`~monitoring.store.Store`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from monitoring._logonce import LogOnce
from monitoring.errors import StoreError
from monitoring.probes import Probes, default_probes
from monitoring.snapshot import Snapshot

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from monitoring.store import Store

_log = logging.getLogger(__name__)

# Figures whose running maximum a peak window keeps.
WINDOW_FIELDS = ("nvml_process_used_bytes", "nvml_device_used_bytes", "host_rss_bytes")
# Figures the persisted timeline keeps per bucket; for "free/available" the minimum is the
# worst case, for the others the maximum.
_BUCKET_MAX = (
    "host_rss_bytes",
    "nvml_device_used_bytes",
    "nvml_process_used_bytes",
    "torch_allocated_bytes",
    "torch_reserved_bytes",
    "torch_inactive_split_bytes",
)
_BUCKET_MIN = ("system_available_bytes", "nvml_device_free_bytes")


@dataclass(frozen=True)
class Marker:
    """A point on the timeline where something happened (for charts).

    Attributes:
        kind: Event kind (``load``, ``synthesis``, ``cleanup``...).
        phase: ``"start"``, ``"end"`` or ``"instant"``.
        label: Short text to show, or None.
        event_id: Id of the event in the store, or None.
        monotonic_s: ``time.monotonic()`` when marked (same clock as ``Snapshot.monotonic_s``).
        wall_s: ``time.time()`` when marked.
    """

    kind: str
    phase: str
    label: str | None
    event_id: str | None
    monotonic_s: float
    wall_s: float


@dataclass(frozen=True)
class WindowPeaks:
    """Largest figures the sampler saw in one peak window (None: no sample had the figure).

    Attributes:
        samples: How many samples fell in the window.
        nvml_process_used_bytes: NVML this process, largest sampled value.
        nvml_device_used_bytes: NVML device-wide, largest sampled value.
        host_rss_bytes: Host RSS, largest sampled value (a lower bound of the true peak).
    """

    samples: int
    nvml_process_used_bytes: int | None
    nvml_device_used_bytes: int | None
    host_rss_bytes: int | None


def _fold(
    current: int | None, value: int | None, pick: Callable[[int, int], int] = max
) -> int | None:
    if value is None:
        return current
    return value if current is None else pick(current, value)


class Sampler:
    """Reads the cheap probes every ``interval_s`` on a daemon thread.

    Cheap means: host RSS and system RAM (psutil), the torch allocator's ``memory_stats()`` where
    CUDA is initialised, and NVML where it is available. Peak RSS and releasable bytes are left
    to the tracker. All reads from other threads copy under a lock.

    Args:
        probes: Probes to read; the process-wide ones by default.
        interval_s: Seconds between samples (0.1 = 10 Hz).
        maxlen: Samples kept; older ones are dropped.
        max_markers: Markers kept; older ones are dropped.
        store: Where to write the downsampled timeline, or None.
        session_id: Session the timeline rows belong to.
        persist_interval_s: Seconds per persisted row (max/min of each figure over the bucket).
    """

    def __init__(
        self,
        probes: Probes | None = None,
        *,
        interval_s: float = 0.1,
        maxlen: int = 3000,
        max_markers: int = 1000,
        store: Store | None = None,
        session_id: str | None = None,
        persist_interval_s: float = 1.0,
    ) -> None:
        if interval_s <= 0 or maxlen < 1 or max_markers < 1:
            raise ValueError("interval_s must be > 0, maxlen and max_markers >= 1")
        self.probes = probes if probes is not None else default_probes()
        self.interval_s = interval_s
        self._samples: deque[Snapshot] = deque(maxlen=maxlen)
        self._markers: deque[Marker] = deque(maxlen=max_markers)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._count = 0
        self._windows: dict[int, dict[str, int | None]] = {}
        self._window_ids = itertools.count(1)
        self._store = store
        self._session_id = session_id
        self._persist_interval_s = persist_interval_s
        self._bucket: Snapshot | None = None
        self._bucket_start = 0.0
        self._once = LogOnce(_log)

    # lifecycle ---------------------------------------------------------------------------------

    @property
    def maxlen(self) -> int:
        """How many samples the ring buffer keeps."""
        return self._samples.maxlen or 0

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def sample_count(self) -> int:
        """Samples taken since creation (including those the ring buffer dropped)."""
        with self._lock:
            return self._count

    def start(self) -> Self:
        """Start the sampling thread (no-op if it runs). Returns self."""
        if self.running:
            return self
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="monitoring-sampler", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread and wait for it (at most ``timeout_s``). Idempotent."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                _log.warning("sampler thread still inside a probe after %.1f s", timeout_s)
        self._flush_bucket()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, stop: threading.Event) -> None:
        deadline = time.monotonic()
        while not stop.is_set():
            self._sample_safely()
            deadline += self.interval_s
            delay = deadline - time.monotonic()
            if delay < 0:  # fell behind (slow probe, busy box): skip, do not burst
                deadline, delay = time.monotonic(), 0.0
            stop.wait(delay)

    def _sample_safely(self) -> None:
        # Last line of defence: probes already turn their own failures into None, but nothing
        # may end this thread silently; an unexpected error is logged once and sampling goes on.
        try:
            self.sample_once()
        except Exception:  # noqa: BLE001  (logged with its traceback; the thread must live)
            self._once.log("sample", logging.ERROR, "sampling failed; retrying", exc_info=True)
        else:
            self._once.clear("sample")

    # sampling ----------------------------------------------------------------------------------

    def sample_once(self) -> Snapshot:
        """Take one sample now (the thread calls this; tests and pages may too)."""
        snapshot = self.probes.snapshot(host_peak=False, heap=False)
        with self._lock:
            self._samples.append(snapshot)
            self._count += 1
            for window in self._windows.values():
                self._widen(window, snapshot)
            due = self._add_to_bucket(snapshot)
        if due is not None:
            self._persist(due)
        return snapshot

    @staticmethod
    def _widen(window: dict[str, int | None], snapshot: Snapshot) -> None:
        window["samples"] = (window["samples"] or 0) + 1
        for field in WINDOW_FIELDS:
            window[field] = _fold(window[field], getattr(snapshot, field))

    def _add_to_bucket(self, snapshot: Snapshot) -> Snapshot | None:
        """Fold the sample into the current timeline bucket; return the bucket if it is due."""
        if self._store is None:
            return None
        bucket = self._bucket
        if bucket is None:
            self._bucket, self._bucket_start = snapshot, snapshot.monotonic_s
            return None
        changes = {f: _fold(getattr(bucket, f), getattr(snapshot, f)) for f in _BUCKET_MAX}
        for f in _BUCKET_MIN:
            changes[f] = _fold(getattr(bucket, f), getattr(snapshot, f), min)
        merged = dataclasses.replace(snapshot, **changes)
        if snapshot.monotonic_s - self._bucket_start < self._persist_interval_s:
            self._bucket = merged
            return None
        self._bucket = None
        return merged

    def _flush_bucket(self) -> None:
        with self._lock:
            bucket, self._bucket = self._bucket, None
        if bucket is not None:
            self._persist(bucket)

    def _persist(self, row: Snapshot) -> None:
        if self._store is None:
            return
        try:
            self._store.add_samples([row], session_id=self._session_id)
        except StoreError as err:
            self._once.log("store", logging.WARNING, "timeline not persisted: %s", err)
        else:
            self._once.clear("store")

    # reads -------------------------------------------------------------------------------------

    def samples(self, since_monotonic_s: float | None = None) -> list[Snapshot]:
        """A copy of the buffered samples, oldest first, optionally only those since a time."""
        with self._lock:
            samples = list(self._samples)
        if since_monotonic_s is None:
            return samples
        return [s for s in samples if s.monotonic_s >= since_monotonic_s]

    def latest(self) -> Snapshot | None:
        """The newest sample, or None before the first."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def markers(self, since_monotonic_s: float | None = None) -> list[Marker]:
        """A copy of the buffered markers, oldest first."""
        with self._lock:
            markers = list(self._markers)
        if since_monotonic_s is None:
            return markers
        return [m for m in markers if m.monotonic_s >= since_monotonic_s]

    def mark(
        self,
        kind: str,
        phase: str = "instant",
        *,
        label: str | None = None,
        event_id: str | None = None,
    ) -> Marker:
        """Add a marker for charts, stamped now."""
        marker = Marker(kind, phase, label, event_id, time.monotonic(), time.time())
        with self._lock:
            self._markers.append(marker)
        return marker

    # peak windows ------------------------------------------------------------------------------

    def open_window(self) -> int:
        """Start tracking the largest sampled figures from now; returns a token."""
        token = next(self._window_ids)
        with self._lock:
            self._windows[token] = dict.fromkeys(("samples", *WINDOW_FIELDS))
        return token

    def close_window(self, token: int) -> WindowPeaks:
        """Stop the window ``token`` and return the largest figures seen in it."""
        with self._lock:
            window = self._windows.pop(token)
        return WindowPeaks(
            samples=window["samples"] or 0,
            nvml_process_used_bytes=window["nvml_process_used_bytes"],
            nvml_device_used_bytes=window["nvml_device_used_bytes"],
            host_rss_bytes=window["host_rss_bytes"],
        )
