"""A fault-injecting stand-in for the ``pynvml`` module.

NVML is the one thing these tests fake: this machine has no GPU and no NVIDIA driver, and the
faults under test (GPU lost, driver unloaded, no permission, containers hiding PIDs) cannot be
caused for real. The stand-in raises the real ``pynvml`` exception classes, so the probe's
error handling is exercised exactly as with the real library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml

MiB = 1024**2
GiB = 1024**3


@dataclass
class FakeGpu:
    """One pretend GPU."""

    total: int = 24 * GiB
    used: int = 2 * GiB
    reserved: int = 300 * MiB
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)


class FakeNvml:
    """Looks like ``pynvml`` to :class:`monitoring.nvml.NvmlProbe`.

    Args:
        gpus: The pretend GPUs.
        init_error: NVML error code ``nvmlInit`` raises, or None.
        v2: Whether ``nvmlDeviceGetMemoryInfo_v2`` exists (old drivers lack it).
    """

    NVMLError = pynvml.NVMLError
    nvmlMemory_v2 = pynvml.nvmlMemory_v2

    def __init__(
        self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None, v2: bool = True
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu(processes=[(os.getpid(), GiB)])]
        self.init_error = init_error
        self.v2 = v2
        self.fail_code: int | None = None  # when set, memory reads raise this NVML error
        self.process_error: int | None = None  # when set, process lists raise this NVML error
        self.memory_calls = 0

    def __getattr__(self, name: str) -> object:
        if name.startswith(("NVMLError_", "NVML_ERROR_")):
            return getattr(pynvml, name)  # the real exception classes and codes
        raise AttributeError(name)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return f"Fake GPU {handle}".encode()

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-00000000-0000-0000-0000-00000000000{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> SimpleNamespace:
        self.memory_calls += 1
        if self.fail_code is not None:
            raise pynvml.NVMLError(self.fail_code)
        if version and not self.v2:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        gpu = self.gpus[handle]
        reserved = gpu.reserved if version else 0
        used = gpu.used if version else gpu.used + gpu.reserved
        return SimpleNamespace(
            total=gpu.total, used=used, free=gpu.total - used - reserved, reserved=reserved
        )

    def _processes(self, handle: int) -> list[SimpleNamespace]:
        if self.process_error is not None:
            raise pynvml.NVMLError(self.process_error)
        return [SimpleNamespace(pid=p, usedGpuMemory=u) for p, u in self.gpus[handle].processes]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return self._processes(handle)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
