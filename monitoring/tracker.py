"""Per-event accounting: ``with tracker.track("synthesis", **features) as t: ...``.

On entry the tracker resets the torch allocator peaks and the host peak RSS, opens a peak window
on the sampler (if any) and reads every probe; on exit it reads them again and builds a frozen
:class:`~monitoring.records.EventRecord` (before, after, peaks, duration, features, the exception
if one escaped), writes it to the store (if any) and marks the sampler's timeline. An exception
from the body is recorded, then re-raised unchanged.

Peaks: the torch allocator's are per device (the synthesis session serialises events per
device). The host peak (``VmHWM``) is one per process, and its resets have one owner
(:meth:`monitoring.host.HostProbe.begin_peak`): an event that starts while another event of the
same process is open does not reset it, so the other's peak stays exact and its own host peak
is an upper bound (``host_rss_source`` ``"vmhwm-shared"``).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Self

from monitoring._logonce import LogOnce
from monitoring.errors import StoreError
from monitoring.probes import PeakReset, Probes, default_probes
from monitoring.records import EVENT_KINDS, EventRecord, Peaks, is_out_of_memory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from monitoring.sampler import Sampler, WindowPeaks
    from monitoring.snapshot import Snapshot
    from monitoring.store import Store

_log = logging.getLogger(__name__)


def _largest(*values: int | None) -> int | None:
    known = [value for value in values if value is not None]
    return max(known) if known else None


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def measure_peaks(
    before: Snapshot, after: Snapshot, reset: PeakReset, window: WindowPeaks | None
) -> Peaks:
    """Combine the allocator's peaks, ``VmHWM`` and the sampler's window into :class:`Peaks`."""
    sampled = window is not None and window.samples > 0
    host = host_source = nvml_process = nvml_device = None
    if reset.host and after.host_peak_rss_bytes is not None:
        host = after.host_peak_rss_bytes
        host_source = "vmhwm" if reset.host_exclusive else "vmhwm-shared"
    if sampled:
        if host is None:
            host = _largest(window.host_rss_bytes, before.host_rss_bytes, after.host_rss_bytes)
            host_source = "sampler"
        nvml_process = _largest(
            window.nvml_process_used_bytes,
            before.nvml_process_used_bytes,
            after.nvml_process_used_bytes,
        )
        nvml_device = _largest(
            window.nvml_device_used_bytes,
            before.nvml_device_used_bytes,
            after.nvml_device_used_bytes,
        )
    return Peaks(
        torch_allocated_bytes=after.torch_peak_allocated_bytes if reset.torch else None,
        torch_reserved_bytes=after.torch_peak_reserved_bytes if reset.torch else None,
        torch_inactive_split_bytes=after.torch_peak_inactive_split_bytes if reset.torch else None,
        host_rss_bytes=host,
        host_rss_source=host_source,
        nvml_process_used_bytes=nvml_process,
        nvml_device_used_bytes=nvml_device,
        samples=window.samples if window is not None else 0,
    )


class TrackHandle:
    """One event being tracked; the context manager :meth:`Tracker.track` returns.

    Attributes:
        event_id: The event's id (also on its markers and in the store).
        kind: Event kind.
        label: Short description, or None.
        features: What the caller attached so far (the record gets a copy).
        record: The finished record, set when the ``with`` block ends.
        store_error: Why the record could not be stored, or None.
    """

    def __init__(
        self,
        tracker: Tracker,
        kind: str,
        label: str | None,
        features: dict[str, Any],
        *,
        releasable: bool,
    ) -> None:
        self.event_id = uuid.uuid4().hex
        self.kind = kind
        self.label = label
        self.features = features
        self.record: EventRecord | None = None
        self.store_error: StoreError | None = None
        self._tracker = tracker
        self._releasable = releasable
        self._reset = PeakReset(torch=False, host=False)
        self._window: int | None = None
        self._before: Snapshot | None = None
        self._t0 = 0.0

    def set(self, **features: Any) -> None:
        """Attach results or details (e.g. ``output_seconds=2.1``) to the event's features."""
        self.features.update(features)

    def __enter__(self) -> Self:
        tracker = self._tracker
        self._reset = tracker.probes.reset_peaks()
        if tracker.sampler is not None:
            self._window = tracker.sampler.open_window()
            tracker.sampler.mark(self.kind, "start", label=self.label, event_id=self.event_id)
        # the heap read walks malloc's free blocks (~1-7 ms): after every event, and before
        # one only where asked for the costly figures (cleanups: what the trim will return)
        self._before = tracker.probes.snapshot(releasable=self._releasable,
                                               heap=self._releasable)
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        duration = time.perf_counter() - self._t0
        tracker = self._tracker
        after = tracker.probes.snapshot(releasable=self._releasable, heap=True)
        tracker.probes.end_peaks(self._reset)
        window = None
        if tracker.sampler is not None and self._window is not None:
            window = tracker.sampler.close_window(self._window)
            tracker.sampler.mark(self.kind, "end", label=self.label, event_id=self.event_id)
        self.record = self._build(after, duration, window, exc)
        tracker._save(self)

    def _build(
        self,
        after: Snapshot,
        duration: float,
        window: WindowPeaks | None,
        exc: BaseException | None,
    ) -> EventRecord:
        before = self._before
        assert before is not None, "record built before __enter__"
        return EventRecord(
            event_id=self.event_id,
            kind=self.kind,
            label=self.label,
            session_id=self._tracker.session_id,
            started_wall_s=before.wall_s,
            started_monotonic_s=before.monotonic_s,
            duration_s=duration,
            before=before,
            after=after,
            peaks=measure_peaks(before, after, self._reset, window),
            features=dict(self.features),
            error_type=None if exc is None else _type_name(exc),
            error_message=None if exc is None else str(exc),
            oom=exc is not None and is_out_of_memory(exc),
        )


class Tracker:
    """Measures events and records them.

    Args:
        probes: Probes to read; the process-wide ones by default.
        sampler: Running sampler for NVML peaks and timeline markers, or None.
        store: Where records go (each committed at once), or None.
        session_id: Store session of the records.
        sinks: Further receivers of every finished record, in order, after the store (e.g.
            the Prometheus metrics' ``observe``, a session's in-memory history). A sink that
            raises is logged once and never fails the tracked event.
    """

    def __init__(
        self,
        probes: Probes | None = None,
        *,
        sampler: Sampler | None = None,
        store: Store | None = None,
        session_id: str | None = None,
        sinks: Iterable[Callable[[EventRecord], object]] = (),
    ) -> None:
        self.probes = probes if probes is not None else default_probes()
        self.sampler = sampler
        self.store = store
        self.session_id = session_id
        self.sinks = list(sinks)
        self._once = LogOnce(_log)

    def track(
        self, kind: str, label: str | None = None, *, releasable: bool = False, **features: Any
    ) -> TrackHandle:
        """Track the ``with`` block as one event of ``kind``.

        Args:
            kind: One of :data:`~monitoring.records.EVENT_KINDS` (load, synthesis, cleanup...).
            label: Short description for charts and tables.
            releasable: Also compute ``torch_releasable_bytes`` before and after, and read the
                host heap before too (costly; the host heap is always read after).
            **features: Request features to record (JSON-serialisable values).

        Raises:
            ValueError: ``kind`` is not a known event kind.
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
        return TrackHandle(self, kind, label, dict(features), releasable=releasable)

    def _save(self, handle: TrackHandle) -> None:
        record = handle.record
        if record is None:
            return
        if self.store is not None:
            try:
                self.store.submit(record)  # a locked database delays it, never loses it
            except StoreError as err:
                handle.store_error = err
                self._once.log("store", logging.WARNING, "event not stored: %s", err)
            else:
                self._once.clear("store")
        for sink in self.sinks:
            try:
                sink(record)
            except Exception as err:  # a sink must never fail the event  # noqa: BLE001
                self._once.log(f"sink {sink!r}", logging.WARNING, "event sink failed: %s", err)
