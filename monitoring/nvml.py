"""NVML probe: device-wide and per-process GPU memory from NVIDIA's management library.

This is the only module that imports ``pynvml`` (PyPI package ``nvidia-ml-py``), and it imports it
on first use, so importing ``monitoring`` works on a machine with no GPU and no driver. Reading
NVML never creates a CUDA context (unlike ``torch.cuda.*``).

When NVML cannot start (no library, no driver, no permission, no GPU) the reason is recorded once,
logged once, and returned by :attr:`NvmlProbe.unavailable_reason`; explicit reads then raise
:class:`~monitoring.errors.NvmlUnavailableError`, background reads return None.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psutil

from monitoring._logonce import LogOnce
from monitoring.errors import NvmlUnavailableError, ProbeReadError
from monitoring.i18n import N_, Say
from monitoring.snapshot import GpuMemory

_log = logging.getLogger(__name__)

# NVML error class (in pynvml) -> what it means for a user, most specific first.
_REASONS = (
    ("NVMLError_LibraryNotFound",
     N_("NVML library not found: no NVIDIA driver is installed here")),
    ("NVMLError_DriverNotLoaded", N_("the NVIDIA driver is not loaded")),
    ("NVMLError_NoPermission", N_("no permission to query the GPU through NVML")),
    ("NVMLError_GpuIsLost", N_("the GPU is lost (fallen off the bus or reset)")),
    ("NVMLError_Uninitialized", N_("NVML is no longer initialised (driver unloaded?)")),
    ("NVMLError_NotSupported", N_("NVML does not support this query on this GPU")),
)
# Errors meaning "this driver has no nvmlDeviceGetMemoryInfo_v2": fall back to v1.
_V2_MISSING = (
    "NVMLError_FunctionNotFound",
    "NVMLError_NotSupported",
    "NVMLError_ArgumentVersionMismatch",
    "NVMLError_InvalidArgument",
)
_PROCESS_LISTS = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")


def _is(nv: ModuleType, err: BaseException, names: tuple[str, ...]) -> bool:
    classes = tuple(cls for cls in (getattr(nv, name, None) for name in names) if cls)
    return bool(classes) and isinstance(err, classes)


def explain(nv: ModuleType, err: BaseException, action: str) -> str:
    """A readable sentence for an NVML error raised while doing ``action``."""
    for name, text in _REASONS:
        if _is(nv, err, (name,)):
            return Say("{reason} ({action}: {error})", reason=text, action=action, error=str(err))
    return Say("{action} failed: {error}", action=action, error=str(err))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Device:
    """What NVML told us once about a GPU, plus which memory API works on it."""

    index: int
    handle: Any
    name: str | None
    uuid: str | None
    use_v2: bool


class NvmlProbe:
    """Reads every GPU's memory and this process's share of it through NVML.

    Thread-safe: NVML itself is, and the one-time start-up runs under a lock.

    Args:
        module: A pynvml-compatible module to use instead of importing ``pynvml`` (tests pass a
            fault-injecting stand-in here).
    """

    def __init__(self, module: ModuleType | None = None) -> None:
        self._module = module
        self._lock = threading.Lock()
        self._started = False
        self._nv: ModuleType | None = None
        self._devices: tuple[_Device, ...] = ()
        self._unavailable: str | None = None
        self._last_error: str | None = None
        self._once = LogOnce(_log)

    @property
    def unavailable_reason(self) -> str | None:
        """Why NVML cannot be used at all on this machine, or None if it can (starts NVML)."""
        self._start()
        return self._unavailable

    @property
    def reason(self) -> str | None:
        """Why the latest background read has no NVML figures (start-up or read failure)."""
        return self.unavailable_reason or self._last_error

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._unavailable = self._open()
        if self._unavailable is not None:
            _log.info("NVML unavailable, GPU figures will be None: %s", self._unavailable)

    def _open(self) -> str | None:
        """Load pynvml, initialise NVML, list the GPUs. Returns why that failed, or None."""
        try:
            nv = self._module or importlib.import_module("pynvml")
        except ImportError as err:
            return Say("nvidia-ml-py (module pynvml) is not installed ({error})", error=str(err))
        try:
            nv.nvmlInit()
            count = nv.nvmlDeviceGetCount()
            devices = tuple(self._describe(nv, index) for index in range(count))
        except nv.NVMLError as err:
            return explain(nv, err, "nvmlInit")
        if not devices:
            return N_("NVML works but sees no GPU")
        self._nv, self._devices = nv, devices
        return None

    @staticmethod
    def _describe(nv: ModuleType, index: int) -> _Device:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        try:
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except nv.NVMLError:
            uuid = None  # optional detail; the GPU is still usable without it
        name = _text(nv.nvmlDeviceGetName(handle))
        return _Device(index, handle, name, uuid, use_v2=hasattr(nv, "nvmlMemory_v2"))

    def read(self, pid: int | None = None) -> tuple[GpuMemory, ...]:
        """Read every GPU now (explicit call); the per-process figures are those of ``pid``
        (default: this process; a worker process's PID for an engine run in a worker).

        Raises:
            NvmlUnavailableError: NVML cannot be used here (reason in ``.reason``).
            ProbeReadError: NVML was working and a query failed (GPU lost, driver unloaded...).
        """
        self._start()
        nv = self._nv
        if nv is None:
            raise NvmlUnavailableError(self._unavailable or "NVML is not started")
        pid = os.getpid() if pid is None else pid
        try:
            return tuple(self._read_device(nv, device, pid) for device in self._devices)
        except nv.NVMLError as err:
            raise ProbeReadError(explain(nv, err, "NVML read")) from err

    def try_read(self, pid: int | None = None) -> tuple[GpuMemory, ...] | None:
        """Read every GPU for a background reader: None when NVML is unavailable or fails.

        A failure is logged once per outage (again only after a read succeeded in between).
        """
        if self.unavailable_reason is not None:
            return None
        try:
            gpus = self.read(pid)
        except ProbeReadError as err:
            self._last_error = str(err)
            self._once.log("read", logging.WARNING, "NVML read failed, GPU figures None: %s", err)
            return None
        if self._last_error is not None:
            self._last_error = None
            self._once.clear("read")
            _log.info("NVML reads work again")
        return gpus

    def _read_device(self, nv: ModuleType, device: _Device, pid: int) -> GpuMemory:
        memory, api = self._memory_info(nv, device)
        process_used, process_reason = self._process_used(nv, device, pid)
        return GpuMemory(
            index=device.index,
            name=device.name,
            uuid=device.uuid,
            total_bytes=int(memory.total),
            used_bytes=int(memory.used),
            free_bytes=int(memory.free),
            reserved_bytes=int(memory.reserved) if api == "v2" else None,
            memory_api=api,
            process_used_bytes=process_used,
            process_reason=process_reason,
        )

    @staticmethod
    def _memory_info(nv: ModuleType, device: _Device) -> tuple[Any, str]:
        if device.use_v2:
            try:
                return nv.nvmlDeviceGetMemoryInfo(device.handle, version=nv.nvmlMemory_v2), "v2"
            except nv.NVMLError as err:
                if not _is(nv, err, _V2_MISSING):
                    raise
                _log.info("GPU %d: no NVML memory API v2 (%s), using v1", device.index, err)
                device.use_v2 = False
        return nv.nvmlDeviceGetMemoryInfo(device.handle), "v1"

    @staticmethod
    def _process_used(nv: ModuleType, device: _Device, pid: int) -> tuple[int | None, str | None]:
        """Bytes NVML charges to this process on ``device`` (compute + graphics lists)."""
        processes: list[Any] = []
        listed = False
        for function in _PROCESS_LISTS:
            try:
                processes.extend(getattr(nv, function)(device.handle))
                listed = True
            except nv.NVMLError as err:
                if _is(nv, err, ("NVMLError_NoPermission",)):
                    return None, "no permission to list the processes on this GPU"
                if _is(nv, err, ("NVMLError_GpuIsLost", "NVMLError_Uninitialized",
                                 "NVMLError_DriverNotLoaded")):
                    raise  # the whole GPU is gone, not just this query
                if not _is(nv, err, ("NVMLError_NotSupported",)):
                    # Guarded on its own (as gpustat does): an old driver without this query
                    # (FunctionNotFound) costs the per-process figure, not the device's.
                    return None, explain(nv, err, function)
        if not listed:
            return None, "NVML cannot list the processes on this GPU"
        return _own_usage(processes, pid)


def _own_usage(processes: list[Any], pid: int) -> tuple[int | None, str | None]:
    """Pick this process out of NVML's process lists (one entry per list it appears in)."""
    mine = [proc.usedGpuMemory for proc in processes if proc.pid == pid]
    if mine:
        known = [int(used) for used in mine if used is not None]
        if not known:
            return None, "NVML does not report per-process memory on this system (WDDM)"
        return max(known), None
    if any(not psutil.pid_exists(proc.pid) for proc in processes):
        return None, (
            f"this process (pid {pid}) is not in NVML's process lists, which name processes "
            "this PID namespace cannot see: a container without the host PID namespace"
        )
    return 0, None
