"""Memory observability for one process: probes, live sampler, per-event tracker, event store.

Knows nothing of what the model does, nor of Streamlit. Importing it loads neither torch,
pynvml nor pandas (nor its own modules until a name is used): NVML is started on the first
read, torch is only read if the process imported it, pandas only for queries.

Typical use::

    store = open_store()                          # never fails; see store.fallback_reason
    session = store.start_session("app")
    sampler = Sampler(store=store, session_id=session).start()
    tracker = Tracker(sampler=sampler, store=store, session_id=session)
    with tracker.track("synthesis", size=42) as t:
        output = model.run(work)
        t.set(output_seconds=output.seconds)
    print(t.record.breakdown.torch_reserved.retained_bytes)
"""

import importlib
from typing import Any

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``import monitoring.release`` or ``monitoring.torch_allocator`` alone stays light: an engine
#: worker under another interpreter imports just those two (and ``monitoring.heap``, which
#: ``release`` uses).
_WHERE = {
    "Breakdown": "monitoring.records",
    "Change": "monitoring.records",
    "CleanupResult": "monitoring.cleanup",
    "CudaUnavailableError": "monitoring.errors",
    "EVENT_KINDS": "monitoring.records",
    "EventRecord": "monitoring.records",
    "GpuMemory": "monitoring.snapshot",
    "HostProbe": "monitoring.host",
    "Marker": "monitoring.sampler",
    "MonitoringError": "monitoring.errors",
    "NvmlProbe": "monitoring.nvml",
    "NvmlUnavailableError": "monitoring.errors",
    "PeakReset": "monitoring.probes",
    "Peaks": "monitoring.records",
    "ProbeReadError": "monitoring.errors",
    "ProbeUnavailableError": "monitoring.errors",
    "Probes": "monitoring.probes",
    "Sampler": "monitoring.sampler",
    "Snapshot": "monitoring.snapshot",
    "Store": "monitoring.store",
    "StoreCorruptError": "monitoring.errors",
    "StoreError": "monitoring.errors",
    "StoreLockedError": "monitoring.errors",
    "StoreReadOnlyError": "monitoring.errors",
    "StoreSchemaError": "monitoring.errors",
    "TorchAllocatorProbe": "monitoring.torch_allocator",
    "TrackHandle": "monitoring.tracker",
    "Tracker": "monitoring.tracker",
    "WindowPeaks": "monitoring.sampler",
    "cleanup": "monitoring.cleanup",
    "default_db_path": "monitoring.store",
    "default_probes": "monitoring.probes",
    "is_out_of_memory": "monitoring.records",
    "open_store": "monitoring.store",
    "take_snapshot": "monitoring.probes",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'monitoring' has no attribute {name!r}")
    module = importlib.import_module(where)
    value = module if where == f"monitoring.{name}" else getattr(module, name)
    globals()[name] = value
    return value


__all__ = [
    "EVENT_KINDS",
    "Breakdown",
    "Change",
    "CleanupResult",
    "CudaUnavailableError",
    "EventRecord",
    "GpuMemory",
    "HostProbe",
    "Marker",
    "MonitoringError",
    "NvmlProbe",
    "NvmlUnavailableError",
    "PeakReset",
    "Peaks",
    "ProbeReadError",
    "ProbeUnavailableError",
    "Probes",
    "Sampler",
    "Snapshot",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "StoreSchemaError",
    "TorchAllocatorProbe",
    "TrackHandle",
    "Tracker",
    "WindowPeaks",
    "cleanup",
    "default_db_path",
    "default_probes",
    "is_out_of_memory",
    "open_store",
    "take_snapshot",
]
