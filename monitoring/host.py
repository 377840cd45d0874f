"""Host probe: this process's resident memory (RSS), its peak, and the machine's available RAM.

torch has no CPU allocator statistics, so host memory is read from the operating system: RSS via
psutil (one reused ``Process`` object, ~16 us a call), the peak from Linux ``/proc/self/status``
``VmHWM``, which writing ``5`` to ``/proc/self/clear_refs`` resets to the current RSS. That reset
gives an exact peak per event; where the kernel or a container forbids it, the peak is flagged as
not resettable (it then counts from process start).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psutil

from monitoring._logonce import LogOnce

_log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class HostProbe:
    """Reads host memory of the current process. Safe to share between threads."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._process = psutil.Process(self._pid)
        self._peak_resettable: bool | None = None
        self._once = LogOnce(_log)

    @property
    def peak_resettable(self) -> bool | None:
        """Whether :meth:`reset_peak` works here; None until it was first tried."""
        return self._peak_resettable

    def _current_process(self) -> psutil.Process:
        if os.getpid() != self._pid:  # forked: the cached Process describes the parent
            self._pid = os.getpid()
            self._process = psutil.Process(self._pid)
        return self._process

    def rss_bytes(self) -> int | None:
        """Host: this process's resident set size now, or None if the OS refuses (logged once)."""
        try:
            return int(self._current_process().memory_info().rss)
        except psutil.Error as err:
            self._once.log("rss", logging.WARNING, "cannot read this process's RSS: %s", err)
            return None

    def peak_rss_bytes(self) -> int | None:
        """Host: peak RSS (``VmHWM``) since process start or the last :meth:`reset_peak`.

        None where there is no ``/proc`` (not Linux).
        """
        try:
            status = _STATUS.read_bytes()
        except OSError as err:
            self._once.log("hwm", logging.INFO, "no peak RSS on this system: %s", err)
            return None
        start = status.find(b"VmHWM:")
        if start < 0:
            return None
        line = status[start + 6 : status.index(b"\n", start)]
        return int(line.split()[0]) * 1024  # reported in kB

    def reset_peak(self) -> bool:
        """Reset the peak RSS to the current RSS (Linux ``clear_refs``). True if it worked.

        A failure (no ``/proc``, read-only ``/proc`` in a container, old kernel) is remembered:
        later calls return False at once, and :attr:`peak_resettable` says so.
        """
        if self._peak_resettable is False:
            return False
        try:
            with _CLEAR_REFS.open("wb", buffering=0) as refs:
                refs.write(b"5")
        except OSError as err:
            self._peak_resettable = False
            _log.info("peak RSS cannot be reset here, so it counts from process start: %s", err)
            return False
        self._peak_resettable = True
        return True

    def system_memory(self) -> tuple[int | None, int | None]:
        """Host, machine-wide: (available bytes, total bytes) of RAM."""
        try:
            memory = psutil.virtual_memory()
        except (OSError, psutil.Error) as err:
            self._once.log("system", logging.WARNING, "cannot read system memory: %s", err)
            return None, None
        return int(memory.available), int(memory.total)
