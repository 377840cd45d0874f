"""Prometheus exposition of this process's memory figures and of its tracked events.

Two kinds of metric live in one :class:`prometheus_client.CollectorRegistry` of their own (never
the library's global one, so that two exporters in one process do not collide):

- *Gauges read at scrape time* by :class:`SnapshotCollector`: every scrape reads the probes once
  (:func:`~monitoring.probes.take_snapshot`, ~0.1 ms without a GPU) and reports the figures of
  that reading. No background thread, nothing cached: what Prometheus stores is what the probes
  said when it asked. A figure the machine cannot provide (no NVML, no CUDA) is left out, not
  reported as 0; ``<ns>_probe_available`` says which probes answer.
- *Event instruments* fed by :class:`MemoryMetrics` ``observe*`` methods: counts, durations and
  peaks of tracked events (loads, syntheses, cleanups), bytes cleanups freed, out-of-memory errors
  and recoveries.

Every metric name starts with a namespace chosen by the caller (``glmtts`` for the app). Units are
bytes and seconds, as Prometheus naming asks. What each figure means is in
:mod:`monitoring.snapshot`: NVML device-wide, NVML this process, torch allocator, or host.

Typical use::

    metrics = MemoryMetrics("myapp")
    with tracker.track("synthesis") as handle:
        ...
    metrics.observe(handle.record)
    body = metrics.exposition()          # for GET /metrics, with metrics.content_type
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from monitoring.probes import take_snapshot
from monitoring.records import EventRecord
from monitoring.snapshot import Snapshot

_log = logging.getLogger(__name__)

#: Buckets of event durations, in seconds (a cleanup takes ~0.01-1 s, a load seconds, a long
#: synthesis minutes).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                    300.0)
#: Buckets of peak memory, in bytes: 16 MiB to 128 GiB, doubling (GPU memory sizes).
PEAK_BUCKETS = tuple(float(2**n) for n in range(24, 38))
#: Peak figures of an event reported by ``<ns>_event_peak_bytes`` (``figure`` label), when known.
PEAK_FIGURES = ("torch_allocated", "torch_reserved", "nvml_process", "host_rss")
#: What a cleanup frees, by ``figure`` label -> the Snapshot field it is read from.
FREED_FIGURES = {
    "torch_allocated": "torch_allocated_bytes",
    "torch_reserved": "torch_reserved_bytes",
    "nvml_process": "nvml_process_used_bytes",
    "host_rss": "host_rss_bytes",
}
#: Cleanup levels counted (a level a record names beyond these is counted too).
CLEANUP_LEVELS = ("light", "full", "restart")

# Snapshot field -> (metric suffix, help). Torch allocator figures: the one device the probes
# watch (the process's current CUDA device).
_TORCH_GAUGES = (
    ("torch_allocated_bytes", "torch_allocated_bytes",
     "torch allocator: bytes in live tensors (torch.cuda.memory_allocated)"),
    ("torch_reserved_bytes", "torch_reserved_bytes",
     "torch allocator: bytes held from CUDA, live tensors plus cache "
     "(torch.cuda.memory_reserved)"),
    ("torch_active_bytes", "torch_active_bytes",
     "torch allocator: bytes in active blocks (live tensors and blocks a stream still uses)"),
    ("torch_inactive_split_bytes", "torch_inactive_split_bytes",
     "torch allocator: free pieces of partly used segments (fragmentation empty_cache cannot "
     "return)"),
)
_TORCH_COUNTERS = (
    ("torch_num_alloc_retries", "torch_alloc_retries",
     "torch allocator: cudaMalloc failures that forced a cache flush and retry"),
    ("torch_num_ooms", "torch_ooms", "torch allocator: out-of-memory errors raised"),
)
_HOST_GAUGES = (
    ("host_rss_bytes", "host_rss_bytes", "host: resident set size (RSS) of this process"),
    ("system_available_bytes", "system_available_bytes",
     "host: RAM available to new allocations, machine-wide"),
    ("system_total_bytes", "system_total_bytes", "host: installed RAM, machine-wide"),
    ("host_heap_in_use_bytes", "host_heap_in_use_bytes",
     "host heap: bytes in live malloc blocks of this process (glibc mallinfo2 uordblks + "
     "hblkhd)"),
    ("host_heap_free_bytes", "host_heap_free_bytes",
     "host heap: free bytes glibc keeps in its arenas, resident or already trimmed (fordblks): "
     "retained for reuse, the most a trim could return"),
    ("host_heap_releasable_bytes", "host_heap_releasable_bytes",
     "host heap: estimate of the retained free bytes resident now, which a light cleanup "
     "(malloc_trim) returns"),
)
_GPU_LABELS = ("gpu", "name", "uuid")
#: Event kinds whose series exist (at 0) from the start, so that rates and dashboards work
#: before the first event.
TRACKED_KINDS = ("load", "synthesis", "cleanup")
_SEEN_MAX = 4096


@dataclass(frozen=True)
class ModelInfo:
    """One model the process holds, for ``<ns>_models_loaded`` and ``<ns>_model_weights_bytes``.

    Attributes:
        name: What the model is (engine or model name); a label, so keep the set small.
        device: Where it lives (``cpu``, ``cuda:0``...), or None.
        weights_bytes: Bytes of its parameters and buffers, or None when unknown.
    """

    name: str
    device: str | None
    weights_bytes: int | None


class SnapshotCollector(Collector):
    """Reads the probes at every scrape and reports their figures as gauges.

    Args:
        namespace: Prefix of every metric name (``glmtts`` -> ``glmtts_host_rss_bytes``).
        snapshot: Reads the probes; :func:`~monitoring.probes.take_snapshot` by default.
        models: Lists the models the process holds, or None to report none.
    """

    def __init__(self, namespace: str, *, snapshot: Callable[[], Snapshot] = take_snapshot,
                 models: Callable[[], Iterable[ModelInfo]] | None = None) -> None:
        self.namespace = namespace
        self._snapshot = snapshot
        self._models = models

    def _name(self, suffix: str) -> str:
        return f"{self.namespace}_{suffix}" if self.namespace else suffix

    def describe(self) -> Iterator[Metric]:
        """The metric names (without reading any probe), for the registry's clash check."""
        yield from self._families(None, ())

    def collect(self) -> Iterator[Metric]:
        """Read the probes now and yield every known figure."""
        snapshot = self._snapshot()
        models = tuple(self._models()) if self._models is not None else ()
        yield from self._families(snapshot, models)

    def _families(self, snap: Snapshot | None, models: tuple[ModelInfo, ...]) -> Iterator[Metric]:
        yield from self._gpu_families(snap)
        for field, suffix, text in _TORCH_GAUGES + _HOST_GAUGES:
            family = GaugeMetricFamily(self._name(suffix), text)
            value = getattr(snap, field) if snap is not None else None
            if value is not None:
                family.add_metric([], float(value))
            yield family
        non_torch = GaugeMetricFamily(
            self._name("non_torch_gpu_bytes"),
            "derived: NVML this process minus torch reserved (CUDA context, cuBLAS/cuDNN "
            "workspaces, other libraries' GPU memory)")
        if snap is not None and snap.non_torch_gpu_bytes is not None:
            non_torch.add_metric([], float(snap.non_torch_gpu_bytes))
        yield non_torch
        for field, suffix, text in _TORCH_COUNTERS:
            counter = CounterMetricFamily(self._name(suffix), text)
            value = getattr(snap, field) if snap is not None else None
            if value is not None:
                counter.add_metric([], float(value))
            yield counter
        yield self._probes(snap)
        yield from self._model_families(snap, models)

    def _gpu_families(self, snap: Snapshot | None) -> Iterator[Metric]:
        specs = (
            ("nvml_device_memory_total_bytes", "total_bytes",
             "NVML device-wide: installed memory visible to the driver"),
            ("nvml_device_memory_used_bytes", "used_bytes",
             "NVML device-wide: memory in use by all processes (v2 API: without the "
             "driver-reserved part)"),
            ("nvml_device_memory_free_bytes", "free_bytes",
             "NVML device-wide: memory no one holds"),
            ("nvml_process_memory_used_bytes", "process_used_bytes",
             "NVML this process on this GPU: CUDA context, torch pool and every other "
             "library's GPU memory (nvidia-smi's process table)"),
        )
        gpus = snap.gpus if snap is not None else ()
        for suffix, attr, text in specs:
            family = GaugeMetricFamily(self._name(suffix), text, labels=_GPU_LABELS)
            for gpu in gpus:
                value = getattr(gpu, attr)
                if value is not None:
                    family.add_metric([str(gpu.index), gpu.name or "", gpu.uuid or ""],
                                      float(value))
            yield family

    def _probes(self, snap: Snapshot | None) -> Metric:
        family = GaugeMetricFamily(
            self._name("probe_available"),
            "1 when a probe gave figures at this scrape, 0 when it could not (no driver, no "
            "CUDA, torch not imported)", labels=("probe",))
        if snap is not None:
            nvml_ok = bool(snap.gpus)
            torch_ok = snap.torch_allocated_bytes is not None
            family.add_metric(["nvml"], 1.0 if nvml_ok else 0.0)
            family.add_metric(["torch_allocator"], 1.0 if torch_ok else 0.0)
            family.add_metric(["host"], 1.0 if snap.host_rss_bytes is not None else 0.0)
            family.add_metric(["host_heap"],
                              1.0 if snap.host_heap_in_use_bytes is not None else 0.0)
        return family

    def _model_families(self, snap: Snapshot | None,
                        models: tuple[ModelInfo, ...]) -> Iterator[Metric]:
        count = GaugeMetricFamily(self._name("models_loaded"),
                                  "models this process holds loaded (all sessions)")
        weights = GaugeMetricFamily(
            self._name("model_weights_bytes"),
            "bytes of the loaded models' parameters and buffers, by model and device",
            labels=("model", "device"))
        if snap is not None:
            count.add_metric([], float(len(models)))
            totals: dict[tuple[str, str], int] = {}
            for model in models:
                key = (model.name, model.device or "")
                totals[key] = totals.get(key, 0) + (model.weights_bytes or 0)
            for (name, device), total in sorted(totals.items()):
                weights.add_metric([name, device], float(total))
        yield count
        yield weights


class MemoryMetrics:
    """A registry with the scrape-time memory gauges and the event instruments.

    Thread-safe: ``observe*`` may be called from any thread while a scrape runs.

    Args:
        namespace: Prefix of every metric name (e.g. ``glmtts``).
        snapshot: Reads the probes at scrape time (default: the process-wide probes).
        models: Lists the models the process holds, or None.

    Attributes:
        registry: The registry to expose (``prometheus_client.start_http_server(port,
            registry=metrics.registry)``, or :meth:`exposition`).
        content_type: The media type of :meth:`exposition`.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, namespace: str, *, snapshot: Callable[[], Snapshot] = take_snapshot,
                 models: Callable[[], Iterable[ModelInfo]] | None = None) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SnapshotCollector(namespace, snapshot=snapshot, models=models)
        self.registry.register(self.collector)
        ns, reg = namespace, self.registry
        self._events = Counter(
            "events", "tracked events by kind (load, synthesis, cleanup) and outcome (ok, "
            "error, oom)", ("kind", "outcome"), namespace=ns, registry=reg)
        self._duration = Histogram(
            "event_duration_seconds", "wall time of tracked events, failed ones included",
            ("kind",), namespace=ns, registry=reg, buckets=DURATION_BUCKETS)
        self._peak = Histogram(
            "event_peak_bytes", "largest value of a memory figure during an event (torch "
            "figures: the allocator's exact peak; host_rss: VmHWM or sampled; nvml_process: "
            "sampled, a lower bound)", ("kind", "figure"), namespace=ns, registry=reg,
            buckets=PEAK_BUCKETS)
        self._cleanups = Counter("cleanups", "cleanups run, by level (light, full)", ("level",),
                                 namespace=ns, registry=reg)
        self._freed = Counter(
            "cleanup_freed_bytes", "bytes cleanups freed, by level and figure (a cleanup "
            "during which the figure grew adds 0)", ("level", "figure"), namespace=ns,
            registry=reg)
        self._ooms = Counter("out_of_memory", "events that failed for lack of memory, by kind",
                             ("kind",), namespace=ns, registry=reg)
        self._recoveries = Counter(
            "oom_recoveries", "retries after an out-of-memory error (full cleanup, then once "
            "more), by result (recovered, failed)", ("result",), namespace=ns, registry=reg)
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        for kind in TRACKED_KINDS:
            for outcome in ("ok", "error", "oom"):
                self._events.labels(kind, outcome)
            self._duration.labels(kind)
            self._ooms.labels(kind)
        for level in CLEANUP_LEVELS:
            self._cleanups.labels(level)
        for result in ("recovered", "failed"):
            self._recoveries.labels(result)

    # ---------------------------------------------------------------------------- observing
    def observe(self, record: EventRecord) -> bool:
        """Count one tracked event, its duration and peaks; for a cleanup also its level and
        what it freed per figure; for a retry (feature ``retry_of``: the event it retries after
        an out-of-memory error) whether it recovered. Everything comes from the record, so this
        is a tracker sink. Idempotent per ``event_id`` (a record observed twice counts once).
        Returns whether it was new."""
        with self._lock:
            if record.event_id in self._seen:
                return False
            self._seen.add(record.event_id)
            self._seen_order.append(record.event_id)
            if len(self._seen_order) > _SEEN_MAX:  # bounded memory: forget the oldest id
                self._seen.discard(self._seen_order.popleft())
        outcome = "oom" if record.oom else ("ok" if record.ok else "error")
        self._events.labels(record.kind, outcome).inc()
        self._duration.labels(record.kind).observe(max(record.duration_s, 0.0))
        peaks = record.breakdown.as_dict()
        for figure in PEAK_FIGURES:
            value = peaks[figure].peak_bytes
            if value is not None:
                self._peak.labels(record.kind, figure).observe(float(value))
        if record.oom:
            self._ooms.labels(record.kind).inc()
        if record.kind == "cleanup":
            self._count_cleanup(record)
        if record.features.get("retry_of"):
            self._recoveries.labels("recovered" if record.ok else "failed").inc()
        return True

    def _count_cleanup(self, record: EventRecord) -> None:
        level = str(record.features.get("level") or record.label or "unknown")
        self._cleanups.labels(level).inc()
        for figure, name in FREED_FIGURES.items():
            before, after = getattr(record.before, name), getattr(record.after, name)
            if before is not None and after is not None:
                self._freed.labels(level, figure).inc(max(before - after, 0))

    # ---------------------------------------------------------------------------- exposing
    def exposition(self) -> bytes:
        """The registry in Prometheus text format (reads the probes now)."""
        return generate_latest(self.registry)
