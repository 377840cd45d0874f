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
import sys
from typing import Any

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
    """Ask glibc to return free heap memory to the OS; None where there is no glibc."""
    libc = _glibc()
    return None if libc is None else bool(libc.malloc_trim(0))


def empty_cache() -> bool:
    """``torch.cuda.empty_cache()`` when this process imported torch and initialised CUDA;
    whether it ran."""
    torch = sys.modules.get("torch")
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
