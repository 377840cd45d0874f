"""The light release steps, with nothing but the standard library: ``gc.collect()``,
``torch.cuda.empty_cache()`` where this process's torch uses CUDA, glibc ``malloc_trim(0)``.

Kept apart from :mod:`monitoring.cleanup` (which measures them) so that an engine worker running
under another interpreter (Python 3.10+, no psutil, no app dependencies) can run the very same
steps in its own process.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import os
import sys
import threading
from typing import Any

from monitoring import heap
from monitoring.imported import imported_torch

_log = logging.getLogger(__name__)


@functools.cache
def _glibc() -> Any:
    """glibc loaded through ctypes (once), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as err:
        _log.info("no glibc, so no malloc_trim: %s", err)
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def malloc_trim() -> bool | None:
    """Ask glibc to return free heap memory to the OS; None where there is no glibc.

    Every trim of the process goes through here, so that the heap probe knows what a trim
    leaves (:func:`monitoring.heap.note_trim`, the zero of its releasable estimate)."""
    libc = _glibc()
    if libc is None:
        return None
    trimmed = bool(libc.malloc_trim(0))
    heap.note_trim()
    return trimmed


def empty_cache() -> bool:
    """``torch.cuda.empty_cache()`` when this process imported torch and initialised CUDA;
    whether it ran."""
    torch = imported_torch()
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return False
    torch.cuda.empty_cache()
    return True


def light_steps() -> dict[str, Any]:
    """gc, ``empty_cache`` and ``malloc_trim`` in this process; what each did."""
    collected = gc.collect()
    return {
        "gc_collected": collected,
        "empty_cache_called": empty_cache(),
        "malloc_trimmed": malloc_trim(),
    }


# ----------------------------------------------------------------- bounded heap retention
#: RSS growth (bytes) since the last trim after which :func:`trim_if_grown` trims.
TRIM_GROWTH_BYTES = 96 * 2**20
_guard_lock = threading.Lock()
_guard: dict[str, int] = {}  # "floor": this process's RSS right after the last trim


def rss_bytes() -> int | None:
    """This process's resident set size from ``/proc/self/statm`` (about 10 µs), or None."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def trim_if_grown(growth_bytes: int = TRIM_GROWTH_BYTES) -> int | None:
    """After a synthesis: ``malloc_trim(0)`` at the first call and whenever this process's RSS
    has grown by more than ``growth_bytes`` since the last trim; returns the bytes it gave back
    (0: no trim was due), or None where there is no glibc or no ``/proc``.

    glibc keeps memory that a synthesis freed (a CPU synthesis of a long text frees hundreds of
    MB of activations, mostly in fragments it cannot give back by itself), so without a trim the
    RSS of a long-running process climbs by that much and stays there. Trimming after every
    synthesis would cost the next one the page faults of its whole working set; trimming only
    past this growth bounds the retention at about ``growth_bytes`` for a trim every few long
    syntheses (a trim takes about 10 ms). The first call trims so that the heap probe's
    releasable estimate (:mod:`monitoring.heap`) is known from the first synthesis on.
    """
    if _glibc() is None:
        return None
    rss = rss_bytes()
    if rss is None:
        return None
    with _guard_lock:
        floor = _guard.get("floor")
        if floor is not None and rss - floor <= growth_bytes:
            _guard["floor"] = min(floor, rss)
            return 0
        malloc_trim()
        after = rss_bytes() or rss
        _guard["floor"] = after
        return max(0, rss - after)
