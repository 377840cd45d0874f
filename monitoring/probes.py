"""All probes of a process read together into one :class:`~monitoring.snapshot.Snapshot`.

The process is this one by default. :class:`Probes` can instead watch another process (an
engine worker): its host RSS and peak by PID, NVML's per-process figure for that PID, and torch
allocator figures from an object that asks that process (same interface as
:class:`~monitoring.torch_allocator.TorchAllocatorProbe`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitoring.host import HostProbe
from monitoring.nvml import NvmlProbe
from monitoring.snapshot import GpuMemory, Snapshot
from monitoring.torch_allocator import TorchAllocatorProbe


@dataclass(frozen=True)
class PeakReset:
    """Which peaks :meth:`Probes.reset_peaks` reset.

    Attributes:
        torch: The torch allocator's ``*_peak`` figures now count from the reset.
        host: The host peak RSS (``VmHWM``) counts from this scope's start or earlier.
        host_exclusive: It was reset for this scope alone (the peak will be exact); False:
            another tracked event of the same process was open, so VmHWM was left alone and
            this event's host peak is an upper bound.
    """

    torch: bool
    host: bool
    host_exclusive: bool = True
    host_scope: int | None = None


class Probes:
    """NVML, torch allocator and host probes of this process, read as one :class:`Snapshot`.

    A snapshot never raises: a probe that is unavailable or failing gives None fields, its reason
    in ``nvml_reason``/``torch_reason``, and one log line per outage. For explicit reads that
    raise typed errors use the probes themselves (``probes.nvml.read()``...).

    Args:
        gpu_index: NVML index of the GPU whose figures fill the top-level ``nvml_*`` fields.
            None: the GPU torch uses (matched by UUID) once torch has initialised CUDA, else the
            first GPU. MIG partitions are not told apart.
        torch_device: CUDA device index for the allocator figures; None: torch's current device.
        nvml: The NVML probe to use (tests pass one built on a stand-in module; probes of a
            worker share the process-wide one).
        pid: None for this process; else the PID (or a callable giving the current PID, None
            while it is not running) of the process whose host and NVML per-process figures
            are read.
        allocator: Reads the torch allocator of that process (default: this process's).
    """

    def __init__(
        self,
        *,
        gpu_index: int | None = None,
        torch_device: int | None = None,
        nvml: NvmlProbe | None = None,
        pid: int | Callable[[], int | None] | None = None,
        allocator: Any = None,
    ) -> None:
        self.gpu_index = gpu_index
        self.nvml = nvml if nvml is not None else NvmlProbe()
        self.allocator = allocator if allocator is not None else TorchAllocatorProbe(torch_device)
        self.host = HostProbe(pid)
        self._watches_other = pid is not None

    def snapshot(
        self, *, host_peak: bool = True, system: bool = True, releasable: bool = False,
        heap: bool = True,
    ) -> Snapshot:
        """Read every probe now.

        Args:
            host_peak: Read the host peak RSS (``VmHWM``, ~20 us).
            system: Read machine-wide available and total RAM (~30 us).
            heap: Read this process's C heap (glibc ``mallinfo2``: walks every free block
                under the arena locks, ~1-7 ms with 10,000 of them; not at sampling rate).
            releasable: Compute ``torch_releasable_bytes`` (walks the allocator's segments:
                costly; only on request, never at sampling rate).
        """
        fields: dict[str, Any] = {"monotonic_s": time.monotonic(), "wall_s": time.time()}
        fields.update(self._host_fields(host_peak=host_peak, system=system, heap=heap))
        fields.update(self._torch_fields(releasable=releasable))
        fields.update(self._nvml_fields())
        return Snapshot(**fields)

    def reset_peaks(self) -> PeakReset:
        """Make the torch allocator peaks and the host peak RSS count from now (the host one
        only when no other tracked event of the process is open: see
        :meth:`HostProbe.begin_peak`). Pair with :meth:`end_peaks`."""
        host, exclusive, scope = self.host.begin_peak()
        return PeakReset(torch=self.allocator.reset_peaks(), host=host,
                         host_exclusive=exclusive, host_scope=scope)

    def end_peaks(self, reset: PeakReset) -> None:
        """Close the host peak scope :meth:`reset_peaks` opened."""
        self.host.end_peak(reset.host_scope)

    def _host_fields(self, *, host_peak: bool, system: bool, heap: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {"host_rss_bytes": self.host.rss_bytes()}
        figures = self.host.heap() if heap else None
        if figures is not None:
            fields["host_heap_in_use_bytes"] = figures.in_use_bytes
            fields["host_heap_free_bytes"] = figures.free_bytes
            fields["host_heap_releasable_bytes"] = figures.releasable_bytes
        if host_peak:
            fields["host_peak_rss_bytes"] = self.host.peak_rss_bytes()
            fields["host_peak_resettable"] = self.host.peak_resettable
        if system:
            available, total = self.host.system_memory()
            fields["system_available_bytes"] = available
            fields["system_total_bytes"] = total
        return fields

    def _torch_fields(self, *, releasable: bool) -> dict[str, Any]:
        figures = self.allocator.try_read()
        if figures is None:
            return {"torch_reason": self.allocator.unavailable_reason or "allocator read failed"}
        fields: dict[str, Any] = dict(figures)
        if releasable:
            fields["torch_releasable_bytes"] = self.allocator.releasable_bytes()
        return fields

    def _nvml_fields(self) -> dict[str, Any]:
        pid = self.host.pid
        if self._watches_other and pid is None:  # not running: it holds no GPU memory
            gpus = self.nvml.try_read()
            gpus = None if gpus is None else tuple(
                dataclasses.replace(g, process_used_bytes=0, process_reason=None) for g in gpus)
        else:
            gpus = self.nvml.try_read(pid)
        if gpus is None:
            return {"nvml_reason": self.nvml.reason}
        gpu = self._watched(gpus)
        if gpu is None:
            return {"gpus": gpus, "nvml_reason": f"no GPU has NVML index {self.gpu_index}"}
        return {
            "gpus": gpus,
            "gpu_index": gpu.index,
            "nvml_device_total_bytes": gpu.total_bytes,
            "nvml_device_used_bytes": gpu.used_bytes,
            "nvml_device_free_bytes": gpu.free_bytes,
            "nvml_process_used_bytes": gpu.process_used_bytes,
            "nvml_reason": gpu.process_reason,
        }

    def _watched(self, gpus: tuple[GpuMemory, ...]) -> GpuMemory | None:
        """The GPU whose figures fill the top-level fields (see ``gpu_index``)."""
        if self.gpu_index is not None:
            return next((gpu for gpu in gpus if gpu.index == self.gpu_index), None)
        uuid = self.allocator.device_uuid()
        if uuid is not None:
            for gpu in gpus:
                if gpu.uuid is not None and gpu.uuid.lower().removeprefix("gpu-") == uuid:
                    return gpu
        return gpus[0]


@functools.cache
def default_probes() -> Probes:
    """The process-wide :class:`Probes` (created on first use; NVML starts on first read)."""
    return Probes()


def take_snapshot(*, releasable: bool = False) -> Snapshot:
    """Read every probe now with the process-wide :class:`Probes` (see :meth:`Probes.snapshot`)."""
    return default_probes().snapshot(releasable=releasable)
