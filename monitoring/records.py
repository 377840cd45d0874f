"""Event records: what one tracked event (load, synthesis, cleanup) cost in memory and time."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from monitoring.snapshot import Snapshot

EVENT_KINDS = ("load", "synthesis", "cleanup", "recommendation", "error")
"""Kinds of event the store accepts."""

_CPU_OOM = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means an allocation failed for lack of memory.

    True for ``MemoryError``, ``torch.cuda.OutOfMemoryError`` (when torch is imported) and the
    ``RuntimeError`` torch's CPU allocator raises ("DefaultCPUAllocator: can't allocate memory").
    """
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)  # older torch, or code that re-raises the message as a RuntimeError
    return _CPU_OOM in text or "CUDA out of memory" in text


@dataclass(frozen=True)
class Change:
    """One figure across an event, in bytes (None where not measurable).

    Attributes:
        before_bytes: Value when the event started.
        after_bytes: Value when it ended.
        peak_bytes: Largest value during it (see :class:`Peaks` for how each is measured).
    """

    before_bytes: int | None
    after_bytes: int | None
    peak_bytes: int | None = None

    @property
    def retained_bytes(self) -> int | None:
        """after - before: what the event left behind (negative: it freed memory)."""
        if self.before_bytes is None or self.after_bytes is None:
            return None
        return self.after_bytes - self.before_bytes

    @property
    def transient_bytes(self) -> int | None:
        """peak - after: memory used during the event and given back by its end."""
        if self.peak_bytes is None or self.after_bytes is None:
            return None
        return self.peak_bytes - self.after_bytes

    @property
    def peak_delta_bytes(self) -> int | None:
        """peak - before: the most the event added on top of what was there (headroom needed)."""
        if self.peak_bytes is None or self.before_bytes is None:
            return None
        return self.peak_bytes - self.before_bytes


@dataclass(frozen=True)
class Peaks:
    """Largest value of each figure during one event, and how it was measured.

    Attributes:
        torch_allocated_bytes: torch allocator: peak of live-tensor bytes, exact (the allocator's
            peak, reset when the event started). None without CUDA.
        torch_reserved_bytes: torch allocator: peak of reserved bytes, exact likewise.
        torch_inactive_split_bytes: torch allocator: peak fragmentation, exact likewise.
        host_rss_bytes: host: peak RSS. Exact (``VmHWM`` reset at start) when ``host_rss_source``
            is ``"vmhwm"``; the largest sampled RSS (a lower bound) when ``"sampler"``; None when
            neither is possible.
        host_rss_source: ``"vmhwm"`` (exact), ``"vmhwm-shared"`` (an upper bound: another
            tracked event of the process overlapped, so ``VmHWM`` was not reset for this one),
            ``"sampler"`` or None.
        nvml_process_used_bytes: NVML this process: largest value among the sampler's samples and
            the before/after readings (a lower bound). None without a running sampler.
        nvml_device_used_bytes: NVML device-wide: likewise.
        samples: Sampler samples taken during the event (0 without a sampler).
    """

    torch_allocated_bytes: int | None = None
    torch_reserved_bytes: int | None = None
    torch_inactive_split_bytes: int | None = None
    host_rss_bytes: int | None = None
    host_rss_source: str | None = None
    nvml_process_used_bytes: int | None = None
    nvml_device_used_bytes: int | None = None
    samples: int = 0


@dataclass(frozen=True)
class Breakdown:
    """Where an event's memory went: torch vs non-torch GPU vs host, retained vs transient.

    Attributes:
        torch_allocated: torch allocator, live tensors.
        torch_reserved: torch allocator, whole pool (live tensors + cache).
        torch_inactive_split: torch allocator, fragmentation ``empty_cache()`` cannot return.
        non_torch_gpu: NVML this process minus torch reserved (CUDA context, cuBLAS/cuDNN
            workspaces, other libraries); no peak (its parts peak at different times).
        nvml_process: NVML this process, everything on the watched GPU.
        nvml_device: NVML device-wide, all processes.
        host_rss: host RSS of this process.
        host_heap_in_use: host heap, live malloc blocks of this process (no peak; before only
            for events tracked with ``releasable``, such as cleanups: the read walks the heap).
        host_heap_releasable: host heap, free bytes resident now that a light cleanup returns
            (an estimate, see :mod:`monitoring.heap`; no peak; before as above).
    """

    torch_allocated: Change
    torch_reserved: Change
    torch_inactive_split: Change
    non_torch_gpu: Change
    nvml_process: Change
    nvml_device: Change
    host_rss: Change
    host_heap_in_use: Change = Change(None, None)
    host_heap_releasable: Change = Change(None, None)

    def as_dict(self) -> dict[str, Change]:
        """The figures by name, in declaration order."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class EventRecord:
    """One tracked event: before/after readings, peaks, duration and outcome.

    Attributes:
        event_id: Unique id (hex uuid4), also carried by the sampler's markers.
        kind: One of :data:`EVENT_KINDS`.
        label: Short description, or None.
        session_id: Store session the event belongs to, or None.
        started_wall_s: ``time.time()`` at the start.
        started_monotonic_s: ``time.monotonic()`` at the start (same clock as samples).
        duration_s: Wall time of the tracked body, measured with ``time.perf_counter()``.
        before: Reading when the body started (after the peaks were reset).
        after: Reading when it ended.
        peaks: Largest values during the body.
        features: What the caller attached (request features and results such as output seconds).
        error_type: Qualified name of the exception that escaped the body, or None.
        error_message: Its message, or None.
        oom: Whether that exception was an out-of-memory error (:func:`is_out_of_memory`).
    """

    event_id: str
    kind: str
    label: str | None
    session_id: str | None
    started_wall_s: float
    started_monotonic_s: float
    duration_s: float
    before: Snapshot
    after: Snapshot
    peaks: Peaks
    features: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    oom: bool = False

    @property
    def ok(self) -> bool:
        """True when the body finished without an exception."""
        return self.error_type is None

    @property
    def breakdown(self) -> Breakdown:
        """The before/after/peak of every figure (see :class:`Change` for retained/transient)."""
        b, a, p = self.before, self.after, self.peaks
        return Breakdown(
            torch_allocated=Change(
                b.torch_allocated_bytes, a.torch_allocated_bytes, p.torch_allocated_bytes
            ),
            torch_reserved=Change(
                b.torch_reserved_bytes, a.torch_reserved_bytes, p.torch_reserved_bytes
            ),
            torch_inactive_split=Change(
                b.torch_inactive_split_bytes,
                a.torch_inactive_split_bytes,
                p.torch_inactive_split_bytes,
            ),
            non_torch_gpu=Change(b.non_torch_gpu_bytes, a.non_torch_gpu_bytes),
            nvml_process=Change(
                b.nvml_process_used_bytes, a.nvml_process_used_bytes, p.nvml_process_used_bytes
            ),
            nvml_device=Change(
                b.nvml_device_used_bytes, a.nvml_device_used_bytes, p.nvml_device_used_bytes
            ),
            host_rss=Change(b.host_rss_bytes, a.host_rss_bytes, p.host_rss_bytes),
            host_heap_in_use=Change(b.host_heap_in_use_bytes, a.host_heap_in_use_bytes),
            host_heap_releasable=Change(b.host_heap_releasable_bytes,
                                        a.host_heap_releasable_bytes),
        )


def peak_figure(record: EventRecord) -> str:
    """The figure that measures an event's peak, by what the record has: on a CUDA device
    (feature ``device``) the torch allocator's reserved pool (an exact peak), else NVML's
    per-process figure (a sampled lower bound); on the CPU, host RSS (``VmHWM``: exact where it
    can be reset)."""
    breakdown = record.breakdown
    if str(record.features.get("device") or "").startswith("cuda"):
        for name in ("torch_reserved", "nvml_process"):
            if getattr(breakdown, name).peak_bytes is not None:
                return name
    return "host_rss"
