"""Memory observability for one process: probes, live sampler, per-event tracker, event store.

Knows nothing of TTS or Streamlit. Importing it loads neither torch, pynvml nor pandas: NVML is
started on the first read, torch is only read if the process imported it, pandas only for queries.

Typical use::

    store = open_store()                          # never fails; see store.fallback_reason
    session = store.start_session("app")
    sampler = Sampler(store=store, session_id=session).start()
    tracker = Tracker(sampler=sampler, store=store, session_id=session)
    with tracker.track("synthesis", text_chars=42) as t:
        audio = engine.synthesize(request)
        t.set(audio_seconds=audio.seconds)
    print(t.record.breakdown.torch_reserved.retained_bytes)
"""

from monitoring import cleanup
from monitoring.cleanup import CleanupResult
from monitoring.errors import (
    CudaUnavailableError,
    MonitoringError,
    NvmlUnavailableError,
    ProbeReadError,
    ProbeUnavailableError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreReadOnlyError,
    StoreSchemaError,
)
from monitoring.host import HostProbe
from monitoring.nvml import NvmlProbe
from monitoring.probes import PeakReset, Probes, default_probes, take_snapshot
from monitoring.records import (
    EVENT_KINDS,
    Breakdown,
    Change,
    EventRecord,
    Peaks,
    is_out_of_memory,
)
from monitoring.sampler import Marker, Sampler, WindowPeaks
from monitoring.snapshot import GpuMemory, Snapshot
from monitoring.store import Store, default_db_path, open_store
from monitoring.torch_allocator import TorchAllocatorProbe
from monitoring.tracker import Tracker, TrackHandle

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
