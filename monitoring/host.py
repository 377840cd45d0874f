"""Host probe: a process's resident memory (RSS), its peak, and the machine's available RAM.

By default the process is this one; give a PID (or a callable returning the current PID, None
while the process is not running) to watch another process of the same user, e.g. an engine
worker. A watched process that is not running holds nothing: its RSS and peak read 0.

torch has no CPU allocator statistics, so host memory is read from the operating system: RSS via
psutil (one reused ``Process`` object, ~16 us a call), the peak from Linux ``/proc/self/status``
``VmHWM``, which writing ``5`` to ``/proc/self/clear_refs`` resets to the current RSS. That reset
gives an exact peak per event; where the kernel or a container forbids it, the peak is flagged as
not resettable (it then counts from process start).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

from monitoring import heap
from monitoring._logonce import LogOnce

_log = logging.getLogger(__name__)

_PROC = Path("/proc")

# Open peak scopes per process (pid -> count), process-wide: VmHWM is one per process, so the
# one owner of its resets is this table. A scope resets VmHWM only when it is the only open
# scope of that process; a scope opened while others run does not reset it (theirs stay
# exact) and gets an upper bound instead.
_SCOPES: dict[int, int] = {}
_SCOPES_LOCK = threading.Lock()


class HostProbe:
    """Reads host memory of one process (this one by default). Safe to share between threads.

    Args:
        pid: None for this process; a PID, or a callable returning the PID of the process to
            watch now (None: it is not running).
    """

    def __init__(self, pid: int | Callable[[], int | None] | None = None) -> None:
        self._target = pid
        self._pid: int | None = os.getpid() if pid is None else None
        self._process: psutil.Process | None = None
        self._peak_resettable: bool | None = None
        self._once = LogOnce(_log)

    @property
    def pid(self) -> int | None:
        """The PID read now; None when a watched process is not running."""
        if self._target is None:
            return os.getpid()
        return self._target() if callable(self._target) else self._target

    def _proc(self, name: str) -> Path:
        return _PROC / ("self" if self._target is None else str(self.pid)) / name

    @property
    def peak_resettable(self) -> bool | None:
        """Whether :meth:`reset_peak` works here; None until it was first tried."""
        return self._peak_resettable

    def _current_process(self) -> psutil.Process | None:
        pid = self.pid  # after a fork (or a worker restart) the cached Process is another one
        if pid is None:
            return None
        if pid != self._pid or self._process is None:
            self._pid, self._process = pid, psutil.Process(pid)
        return self._process

    def rss_bytes(self) -> int | None:
        """Host: the process's resident set size now; 0 for a watched process that is not
        running; None if the OS refuses (logged once)."""
        try:
            process = self._current_process()
            return 0 if process is None else int(process.memory_info().rss)
        except psutil.NoSuchProcess:
            return 0 if self._target is not None else None
        except psutil.Error as err:
            self._once.log("rss", logging.WARNING, "cannot read the RSS of pid %s: %s",
                           self._pid, err)
            return None

    def peak_rss_bytes(self) -> int | None:
        """Host: peak RSS (``VmHWM``) since process start or the last :meth:`reset_peak`.

        None where there is no ``/proc`` (not Linux); 0 for a watched process that is not running.
        """
        if self._target is not None and self.pid is None:
            return 0
        try:
            status = self._proc("status").read_bytes()
        except FileNotFoundError:
            return 0 if self._target is not None else None
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
        if self._target is not None and self.pid is None:
            return True  # nothing running: its peak (0) counts from now
        try:
            with self._proc("clear_refs").open("wb", buffering=0) as refs:
                refs.write(b"5")
        except FileNotFoundError:
            if self._target is not None:
                return True  # the watched process just ended: it holds nothing
            self._peak_resettable = False
            return False
        except OSError as err:
            self._peak_resettable = False
            _log.info("peak RSS cannot be reset here, so it counts from process start: %s", err)
            return False
        self._peak_resettable = True
        return True

    def begin_peak(self) -> tuple[bool, bool, int | None]:
        """Open a peak scope on the process: ``(reset, exclusive, scope)``.

        ``reset``: whether VmHWM counts from here or earlier (False where it cannot be reset:
        the peak then counts from process start). ``exclusive``: no other scope of this
        process is open, so VmHWM was reset now and the scope's peak will be exact; False: it
        was left alone (another scope's exact peak must not be cut short) and this scope's
        peak is an upper bound. ``scope``: give it to :meth:`end_peak` (None: nothing opened,
        the watched process is not running).
        """
        pid = self.pid
        if pid is None:
            return True, True, None
        with _SCOPES_LOCK:
            others = _SCOPES.get(pid, 0)
            _SCOPES[pid] = others + 1
            if others:
                return self._peak_resettable is not False, False, pid
            return self.reset_peak(), True, pid

    @staticmethod
    def end_peak(scope: int | None) -> None:
        """Close a scope :meth:`begin_peak` opened."""
        if scope is None:
            return
        with _SCOPES_LOCK:
            left = _SCOPES.get(scope, 0) - 1
            if left > 0:
                _SCOPES[scope] = left
            else:
                _SCOPES.pop(scope, None)

    def heap(self) -> heap.HeapFigures | None:
        """Host heap of this process (glibc malloc, see :mod:`monitoring.heap`); None for a
        watched other process (its heap cannot be read from here) or where glibc's figures are
        not available."""
        return heap.read() if self._target is None else None

    def system_memory(self) -> tuple[int | None, int | None]:
        """Host, machine-wide: (available bytes, total bytes) of RAM."""
        try:
            memory = psutil.virtual_memory()
        except (OSError, psutil.Error) as err:
            self._once.log("system", logging.WARNING, "cannot read system memory: %s", err)
            return None, None
        return int(memory.available), int(memory.total)
