"""Host, this process: what the C allocator (glibc malloc) holds in use and what it holds free.

torch's CPU tensors, numpy arrays and every C library of the process allocate through malloc.
When they free, glibc keeps the memory for reuse instead of handing it back to the system, so
the process's RSS stays up although nothing uses that memory; ``malloc_trim(0)`` (the light
cleanup) gives back what it can. This module tells the two apart, the way the torch allocator's
figures tell live tensors from its cache on a GPU:

- *in use*: ``uordblks + hblkhd`` of glibc's ``mallinfo2()``: bytes of live blocks in every
  arena plus the big blocks glibc maps on their own (those go back to the system on free).
- *free*: ``fordblks``: bytes of free blocks glibc holds in its arenas, resident or not (an
  earlier trim returns the pages of a free block to the system but the block stays on glibc's
  lists, so this counts it still): what a trim could return at most.
- *releasable*: an estimate of the free bytes that are resident now, i.e. what a trim returns:
  ``RssAnon - in use`` (anonymous resident memory not in live blocks) less the same figure right
  after this process's last trim (:func:`note_trim`; memory a trim cannot return, such as
  Python's small-object arenas, thread stacks and free pieces smaller than a page), at most
  *free*. It grows by what the process allocated and freed since that trim; anything else that
  grew in anonymous memory since then (Python objects, which live outside malloc's arenas) is
  counted in it too, so it is an estimate (within a few MiB of the trim's real return in this
  project's CPU engine, 1-6 MiB on 100-350 MiB). None until the process has trimmed once.

``mallinfo2`` exists in glibc 2.33 and later. Elsewhere (musl, macOS, an older glibc, or a
replacement allocator such as jemalloc preloaded in front of glibc's) every figure is None:
unknown, never a wrong number. It walks every free block of every arena under the arena's lock:
about 1-7 ms with 10,000 free blocks on this machine, so the probes read it at event boundaries
and on request, never at the sampler's rate.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
           "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (every field a ``size_t``)."""

    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


@dataclass(frozen=True)
class HeapFigures:
    """One reading of glibc's heap in this process (bytes).

    Attributes:
        in_use_bytes: Live blocks: arenas' used bytes plus separately mapped big blocks
            (``uordblks + hblkhd``).
        mmapped_bytes: The separately mapped big blocks alone (``hblkhd``).
        free_bytes: Free blocks glibc holds in its arenas, resident or not (``fordblks``).
        top_bytes: The free top of the main arena, which a trim always returns (``keepcost``).
        arena_bytes: Bytes the arenas hold from the system, used and free (``arena``).
        free_chunks: Free blocks in the arenas (``ordblks``): what the read walks.
        releasable_bytes: Estimate of the free bytes that are resident now, what
            ``malloc_trim(0)`` returns (see the module doc); None until the first trim.
    """

    in_use_bytes: int
    mmapped_bytes: int
    free_bytes: int
    top_bytes: int
    arena_bytes: int
    free_chunks: int
    releasable_bytes: int | None


@functools.cache
def _mallinfo2() -> Any:
    """glibc's ``mallinfo2`` as a ctypes function, or None where it does not describe the
    allocator in use."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        process = ctypes.CDLL(None)  # the symbols the process resolves: its malloc
        libc = ctypes.CDLL("libc.so.6")
    except OSError as err:
        _log.info("no glibc, so no heap figures: %s", err)
        return None
    if not hasattr(libc, "mallinfo2"):
        _log.info("this C library has no mallinfo2 (glibc < 2.33?): no heap figures")
        return None
    used = ctypes.cast(process.malloc, ctypes.c_void_p).value
    glibc = ctypes.cast(libc.malloc, ctypes.c_void_p).value
    if used != glibc:  # e.g. jemalloc preloaded: glibc's figures would describe an idle heap
        _log.info("malloc is not glibc's here (a preloaded allocator): no heap figures")
        return None
    function = libc.mallinfo2
    function.restype = _MallInfo2
    function.argtypes = []
    return function


def available() -> bool:
    """Whether this process's heap can be read (glibc 2.33+ with its own malloc)."""
    return _mallinfo2() is not None


def rss_anon_bytes() -> int | None:
    """This process's anonymous resident memory (``RssAnon`` of ``/proc/self/status``), or
    None where there is no such line."""
    try:
        with open("/proc/self/status", "rb") as fh:
            status = fh.read()
    except OSError:
        return None
    start = status.find(b"RssAnon:")
    if start < 0:
        return None
    return int(status[start + 8: status.index(b"\n", start)].split()[0]) * 1024


_lock = threading.Lock()
_after_trim: dict[str, int] = {}  # "other": RssAnon - in use, right after the last trim


def _raw() -> tuple[int, int, int, int, int, int] | None:
    """``(in use, mmapped, free, top, arena, free chunks)`` now, or None."""
    function = _mallinfo2()
    if function is None:
        return None
    info = function()
    return (info.uordblks + info.hblkhd, info.hblkhd, info.fordblks, info.keepcost,
            info.arena, info.ordblks)


def note_trim() -> None:
    """Remember, right after a ``malloc_trim(0)`` of this process, the anonymous resident
    memory that is not in live blocks: what a trim leaves (the releasable estimate's zero)."""
    raw, anon = _raw(), rss_anon_bytes()
    if raw is None or anon is None:
        return
    with _lock:
        _after_trim["other"] = anon - raw[0]


def read() -> HeapFigures | None:
    """glibc's heap of this process now; None where it cannot be read (see the module doc)."""
    raw = _raw()
    if raw is None:
        return None
    in_use, mmapped, free, top, arena, chunks = raw
    with _lock:
        other = _after_trim.get("other")
    anon = rss_anon_bytes() if other is not None else None
    releasable = None
    if anon is not None and other is not None:
        releasable = min(free, max(0, anon - in_use - other))
    return HeapFigures(in_use_bytes=in_use, mmapped_bytes=mmapped, free_bytes=free,
                       top_bytes=top, arena_bytes=arena, free_chunks=chunks,
                       releasable_bytes=releasable)


__all__ = ["HeapFigures", "available", "note_trim", "read", "rss_anon_bytes"]
