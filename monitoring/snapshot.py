"""What one reading of every memory probe holds: :class:`Snapshot` and :class:`GpuMemory`.

Every figure is in bytes (fields named ``*_bytes``) or a count, and ``None`` where the machine
cannot provide it. Each field says where it comes from:

- *NVML device-wide*: the whole GPU, all processes and the driver (``nvidia-smi``'s top table).
- *NVML this process*: what the driver charges to this process on that GPU: CUDA context, the torch
  allocator's pool and every other library's GPU memory (``nvidia-smi``'s process table).
- *torch allocator*: PyTorch's CUDA caching allocator (``torch.cuda.memory_stats()``), one device.
- *host*: this process's resident set (RSS) in RAM, and the machine's available RAM.
- *host heap*: this process's C allocator (glibc malloc, :mod:`monitoring.heap`): bytes in live
  blocks versus free bytes it keeps, the CPU counterpart of torch's allocated versus reserved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuMemory:
    """Memory of one GPU as NVML reports it.

    Attributes:
        index: NVML device index (PCI bus order, as ``nvidia-smi`` numbers GPUs; under
            ``CUDA_VISIBLE_DEVICES`` it may differ from the CUDA index).
        name: Product name, e.g. ``"NVIDIA A10G"``.
        uuid: Device UUID (``"GPU-..."``), or None if NVML did not give one.
        total_bytes: NVML device-wide: installed memory visible to the driver.
        used_bytes: NVML device-wide: memory in use. With ``memory_api == "v2"`` this excludes the
            driver-reserved part (``reserved_bytes``); with ``"v1"`` it includes it, so an idle
            GPU already shows several hundred MB used.
        free_bytes: NVML device-wide: memory no one holds.
        reserved_bytes: NVML device-wide: memory reserved by driver and firmware (v2 API only).
        memory_api: ``"v2"`` (``nvmlDeviceGetMemoryInfo_v2``) or ``"v1"``.
        process_used_bytes: NVML this process on this GPU (compute + graphics process lists):
            everything the driver charges to this process. 0 when the lists do not name this
            process and nothing suggests they cannot (it holds no GPU context); None when unknown.
        process_reason: Why ``process_used_bytes`` is None, else None.
    """

    index: int
    name: str | None
    uuid: str | None
    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None
    reserved_bytes: int | None
    memory_api: str
    process_used_bytes: int | None
    process_reason: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """One reading of every probe, at one moment.

    GPU fields describe one watched GPU (``gpu_index``); ``gpus`` lists every GPU.

    Peaks: ``torch_peak_*`` are the allocator's peaks since the last
    ``torch.cuda.reset_peak_memory_stats()`` (the tracker resets them when an event starts).
    ``host_peak_rss_bytes`` is Linux ``VmHWM``: the peak RSS since the process started or since
    the last write of ``5`` to ``/proc/self/clear_refs`` (the tracker writes it when an event
    starts); ``host_peak_resettable`` says whether that reset works here.

    Attributes:
        monotonic_s: ``time.monotonic()`` when the reading started (for intervals).
        wall_s: ``time.time()`` when the reading started (seconds since the epoch, for display).
        gpu_index: NVML index of the watched GPU, or None without NVML.
        nvml_device_total_bytes: NVML device-wide total memory of the watched GPU.
        nvml_device_used_bytes: NVML device-wide used memory (see ``GpuMemory.used_bytes``).
        nvml_device_free_bytes: NVML device-wide free memory.
        nvml_process_used_bytes: NVML this process on the watched GPU (context + all libraries).
        torch_allocated_bytes: torch allocator: bytes in live tensors.
        torch_reserved_bytes: torch allocator: bytes held from CUDA (live tensors + cache).
        torch_active_bytes: torch allocator: bytes in active blocks (live tensors plus blocks
            still in use by a stream).
        torch_inactive_split_bytes: torch allocator: free pieces of partly used segments
            ("non-releasable"): fragmentation that ``empty_cache()`` cannot return.
        torch_peak_allocated_bytes: torch allocator: peak of ``torch_allocated_bytes``.
        torch_peak_reserved_bytes: torch allocator: peak of ``torch_reserved_bytes``.
        torch_peak_active_bytes: torch allocator: peak of ``torch_active_bytes``.
        torch_peak_inactive_split_bytes: torch allocator: peak of ``torch_inactive_split_bytes``.
        torch_num_alloc_retries: torch allocator: count of cudaMalloc failures that forced a cache
            flush and retry (a count, not bytes; never reset by ``reset_peak_memory_stats``).
        torch_num_ooms: torch allocator: count of out-of-memory errors raised (a count).
        torch_releasable_bytes: torch allocator: exactly what ``torch.cuda.empty_cache()`` would
            free now (segments with no active block). Only filled when asked for (costly).
        host_rss_bytes: host: this process's resident set size (RSS).
        host_peak_rss_bytes: host: peak RSS (Linux ``VmHWM``), see peaks above.
        host_peak_resettable: host: whether the peak can be reset per event (None: not tried yet).
        host_heap_in_use_bytes: host heap: bytes in live malloc blocks of this process (glibc
            ``uordblks + hblkhd``); None where glibc's ``mallinfo2`` is absent, for a watched
            other process, and in the sampler's samples (the read walks the heap).
        host_heap_free_bytes: host heap: free bytes glibc keeps in its arenas, resident or
            already given back by a trim (``fordblks``): the most a trim could return.
        host_heap_releasable_bytes: host heap: estimate of the free bytes resident now, which
            a light cleanup (``malloc_trim``) returns (see :mod:`monitoring.heap`); None until
            the process trimmed once.
        system_available_bytes: host: RAM available to new allocations, machine-wide.
        system_total_bytes: host: installed RAM, machine-wide.
        gpus: Every GPU NVML sees.
        nvml_reason: Why the NVML fields are None (no driver, no permission, GPU lost...).
        torch_reason: Why the torch allocator fields are None (torch not imported, no CUDA...).
    """

    monotonic_s: float
    wall_s: float
    gpu_index: int | None = None
    nvml_device_total_bytes: int | None = None
    nvml_device_used_bytes: int | None = None
    nvml_device_free_bytes: int | None = None
    nvml_process_used_bytes: int | None = None
    torch_allocated_bytes: int | None = None
    torch_reserved_bytes: int | None = None
    torch_active_bytes: int | None = None
    torch_inactive_split_bytes: int | None = None
    torch_peak_allocated_bytes: int | None = None
    torch_peak_reserved_bytes: int | None = None
    torch_peak_active_bytes: int | None = None
    torch_peak_inactive_split_bytes: int | None = None
    torch_num_alloc_retries: int | None = None
    torch_num_ooms: int | None = None
    torch_releasable_bytes: int | None = None
    host_rss_bytes: int | None = None
    host_peak_rss_bytes: int | None = None
    host_peak_resettable: bool | None = None
    host_heap_in_use_bytes: int | None = None
    host_heap_free_bytes: int | None = None
    host_heap_releasable_bytes: int | None = None
    system_available_bytes: int | None = None
    system_total_bytes: int | None = None
    gpus: tuple[GpuMemory, ...] = ()
    nvml_reason: str | None = None
    torch_reason: str | None = None

    @property
    def non_torch_gpu_bytes(self) -> int | None:
        """Derived: NVML this-process used minus torch reserved, on the watched GPU.

        GPU memory this process holds outside PyTorch's allocator: the CUDA context, cuBLAS/cuDNN
        workspaces, ONNX Runtime arenas, NCCL buffers. None unless both figures are known.
        """
        if self.nvml_process_used_bytes is None or self.torch_reserved_bytes is None:
            return None
        return self.nvml_process_used_bytes - self.torch_reserved_bytes

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values, plus the derived ``non_torch_gpu_bytes``."""
        data = dataclasses.asdict(self)
        data["gpus"] = [dataclasses.asdict(gpu) for gpu in self.gpus]
        data["non_torch_gpu_bytes"] = self.non_torch_gpu_bytes
        return data
