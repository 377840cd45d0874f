"""Torch allocator probe: PyTorch's CUDA caching allocator, read from ``torch.cuda.memory_stats``.

torch is never imported here: the probe reads the allocator of the torch this process already
imported (``sys.modules``). A process that has not imported torch holds no torch GPU memory, and
the figures are None with that reason. Everything is guarded on ``torch.cuda.is_available()``
(torch's CPU build answers some calls with zeros and others with exceptions), and nothing is read
before torch has initialised CUDA, so that a probe never creates a CUDA context (~300-700 MB).
"""

from __future__ import annotations

import logging
from types import ModuleType

from monitoring._logonce import LogOnce
from monitoring.errors import CudaUnavailableError, ProbeReadError
from monitoring.imported import imported_torch

_log = logging.getLogger(__name__)

# Snapshot field -> key of torch.cuda.memory_stats() (all pools).
STAT_KEYS = {
    "torch_allocated_bytes": "allocated_bytes.all.current",
    "torch_reserved_bytes": "reserved_bytes.all.current",
    "torch_active_bytes": "active_bytes.all.current",
    "torch_inactive_split_bytes": "inactive_split_bytes.all.current",
    "torch_peak_allocated_bytes": "allocated_bytes.all.peak",
    "torch_peak_reserved_bytes": "reserved_bytes.all.peak",
    "torch_peak_active_bytes": "active_bytes.all.peak",
    "torch_peak_inactive_split_bytes": "inactive_split_bytes.all.peak",
    "torch_num_alloc_retries": "num_alloc_retries",
    "torch_num_ooms": "num_ooms",
}


def _normalise_uuid(uuid: object) -> str:
    text = str(uuid).lower()
    return text.removeprefix("gpu-")


class TorchAllocatorProbe:
    """Reads the CUDA caching allocator's figures for one device.

    Args:
        device: CUDA device index (as torch numbers devices); None means torch's current device
            of the reading thread (CUDA keeps one per thread: a sampler thread reads device 0
            unless told otherwise, so pass the index when the app uses another device).
    """

    def __init__(self, device: int | None = None) -> None:
        self._device = device
        self._cuda_available: bool | None = None
        self._uuids: dict[int, str | None] = {}
        self._once = LogOnce(_log)

    def _cuda(self) -> ModuleType | None:
        """``torch.cuda`` if this process imported torch and CUDA is available, else None."""
        torch = imported_torch()
        if torch is None:
            return None
        if self._cuda_available is None:
            self._cuda_available = bool(torch.cuda.is_available())
        return torch.cuda if self._cuda_available else None

    @property
    def unavailable_reason(self) -> str | None:
        """Why there are no allocator figures, or None when there are."""
        if imported_torch() is None:
            return "torch is not imported in this process, so it holds no torch GPU memory"
        if self._cuda() is None:
            return "torch reports CUDA is not available (CPU-only build or no GPU)"
        return None

    def _initialised(self) -> ModuleType | None:
        """``torch.cuda`` once torch has initialised CUDA in this process, else None."""
        cuda = self._cuda()
        return cuda if cuda is not None and cuda.is_initialized() else None

    def device_index(self) -> int | None:
        """The CUDA device read, once CUDA is initialised."""
        cuda = self._initialised()
        if cuda is None:
            return None
        return cuda.current_device() if self._device is None else self._device

    def device_uuid(self) -> str | None:
        """UUID of the device read (lower case, no ``GPU-`` prefix), to find it in NVML."""
        index = self.device_index()
        if index is None:
            return None
        if index not in self._uuids:
            uuid = getattr(self._cuda().get_device_properties(index), "uuid", None)
            self._uuids[index] = None if uuid is None else _normalise_uuid(uuid)
        return self._uuids[index]

    def read(self) -> dict[str, int]:
        """The allocator figures now, keyed by Snapshot field name (explicit call).

        Before torch initialises CUDA the allocator holds nothing: every figure is 0, read without
        creating a CUDA context.

        Raises:
            CudaUnavailableError: torch not imported, or CUDA not available.
            ProbeReadError: torch failed to report (e.g. after a device-side error).
        """
        cuda = self._cuda()
        if cuda is None:
            raise CudaUnavailableError(self.unavailable_reason or "CUDA is not available")
        if not cuda.is_initialized():
            return dict.fromkeys(STAT_KEYS, 0)
        try:
            stats = cuda.memory_stats(self._device)
        except RuntimeError as err:
            raise ProbeReadError(f"torch.cuda.memory_stats failed: {err}") from err
        return {field: int(stats.get(key, 0)) for field, key in STAT_KEYS.items()}

    def try_read(self) -> dict[str, int] | None:
        """:meth:`read` for background readers: None when unavailable or failing (logged once)."""
        if self._cuda() is None:
            return None
        try:
            figures = self.read()
        except ProbeReadError as err:
            self._once.log("read", logging.WARNING, "torch allocator figures are None: %s", err)
            return None
        self._once.clear("read")
        return figures

    def reset_peaks(self) -> bool:
        """Reset every ``*_peak`` of the allocator (``reset_peak_memory_stats``).

        Returns:
            True if the peaks now count from here (also when CUDA is not initialised yet: the
            allocator has held nothing so far), False without CUDA.
        """
        cuda = self._cuda()
        if cuda is None:
            return False
        if cuda.is_initialized():
            cuda.reset_peak_memory_stats(self._device)
        return True

    def releasable_bytes(self) -> int | None:
        """Exactly what ``torch.cuda.empty_cache()`` would free now; None without CUDA.

        Sums ``total_size`` of this device's segments in ``torch.cuda.memory_snapshot()`` that hold
        no active block. Costly (walks every segment and block): call it on request, not at 10 Hz.
        """
        index = self.device_index()
        if index is None:
            return None if self._cuda() is None else 0
        segments = self._cuda().memory_snapshot()
        return sum(
            int(segment["total_size"])
            for segment in segments
            if segment.get("device") == index and segment["active_size"] == 0
        )
