"""On a CPU, the C allocator's heap split the way the torch allocator's figures split a GPU.

RSS that grew since the load is either memory glibc keeps free for reuse (``malloc_trim``, the
light cleanup, returns it: the CPU counterpart of PyTorch's cache, which ``empty_cache``
returns) or memory in live blocks (the counterpart of live tensors). The snapshot's heap figures
(:mod:`monitoring.heap`) tell them apart:

- ``cache.reclaimable``: the resident free heap, with the figure a light cleanup returns, and
  how much of the RSS growth since the load it explains.
- ``leak.heap``: bytes in live blocks rising across syntheses of one request shape (the same
  configuration and size, so that kernel caches keyed by shape add nothing) while RSS rises,
  cleanups in between or not: a possible leak that no cleanup returns (a light one returns free
  memory only, a full one the model only): restarting the process is the remedy.

Without heap figures (another C library, a watched worker process) the old wording stays: RSS
above the post-load level may be partly free memory, how much cannot be known beforehand.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from typing import Any

from monitoring.i18n import _
from monitoring.policy.context import _Context
from monitoring.policy.history import HistoryEvent
from monitoring.policy.prediction import _chars, _matches
from monitoring.policy.recommendation import Reason
from monitoring.policy.settings import config_names
from monitoring.units import fmt_bytes


def cpu_cache(ctx: _Context) -> list[Reason]:
    """Free heap memory a light cleanup returns (the CPU side of ``cache.reclaimable``)."""
    snap, settings = ctx.snapshot, ctx.settings
    rss = snap.host_rss_bytes
    if rss is None or ctx.baseline is None or not ctx.loaded:
        return []
    above = rss - ctx.baseline
    releasable = snap.host_heap_releasable_bytes
    if releasable is None:
        if above < settings.reclaimable_bytes:
            return []
        return [Reason("cache.reclaimable", "light", "info", _(
            "host RSS is {size} above its level after the load; part of it may be freed memory "
            "glibc keeps for reuse, which a light cleanup (malloc_trim) returns to the system "
            "(how much cannot be known beforehand).").format(size=fmt_bytes(above)))]
    if releasable < settings.heap_reclaimable_bytes:
        return []
    held = _("~{size} held free by the C allocator (glibc)").format(size=fmt_bytes(releasable))
    if ctx.room is not None and ctx.room.demand > ctx.room.free_now:
        return [Reason("cache.reclaimable", "none", "info", _(
            "{held}; keep it: the next request needs more than the RAM has free, and glibc "
            "serves it from this memory first.").format(held=held))]
    tight = (ctx.headroom is not None and ctx.total is not None
             and ctx.headroom < settings.low_free_fraction * ctx.total)
    if tight:
        assert ctx.headroom is not None
        return [Reason("cache.reclaimable", "light", "advised", _(
            "{held} while only {free} of RAM is available: a light cleanup (malloc_trim) "
            "returns it to the system.").format(held=held, free=fmt_bytes(ctx.headroom)))]
    if above > 0 and releasable >= above:
        return [Reason("cache.reclaimable", "light", "advised", _(
            "{held}: more than the {growth} host RSS grew since the load, so that growth is "
            "free memory kept for reuse, not a leak; a light cleanup (malloc_trim) returns "
            "it.").format(held=held, growth=fmt_bytes(above)))]
    if above > 0 and releasable * 2 >= above:
        return [Reason("cache.reclaimable", "light", "advised", _(
            "{held}: {share} of the {growth} host RSS grew since the load is free memory kept "
            "for reuse, not a leak; a light cleanup (malloc_trim) returns it.").format(
                held=held, share=f"{releasable / above:.0%}",
                growth=fmt_bytes(above)))]
    return [Reason("cache.reclaimable", "light", "info", _(
        "{held}; a light cleanup (malloc_trim) returns it. This process reuses it anyway, so it "
        "only helps other programs.").format(held=held))]


def _shape(event: HistoryEvent, names: Sequence[str], ctx: _Context) -> tuple[Any, ...]:
    return (_chars(event, ctx.settings), *(repr(event.features.get(n)) for n in names))


def _in_use(event: HistoryEvent) -> int:
    return event.host_heap_in_use.after_bytes or 0


def heap_leak(ctx: _Context) -> list[Reason]:
    """Live heap rising across repeats of one request shape: a leak no cleanup returns."""
    settings = ctx.settings
    if ctx.domain != "cpu":
        return []
    names: Sequence[str] = ("engine", "device")
    wanted = ctx.pending.feature_map() if ctx.pending is not None else None
    if wanted is not None:
        names = config_names(settings, wanted)
    series = [(i, e) for i, e in enumerate(ctx.history) if e.kind == "synthesis" and e.ok
              and e.host_heap_in_use.after_bytes is not None
              and e.host_rss.after_bytes is not None
              and (wanted is None or _matches(e.features, wanted, names))]
    # (history index of the earlier synthesis, in-use step) for each repeat of a shape: the
    # kernel caches its shapes need exist already, so a repeat that leaves more live bytes
    # holds them for good
    steps: list[tuple[int, int]] = []
    seen: set[tuple[Any, ...]] = set()
    for (index, prev), (_i, event) in itertools.pairwise(series):
        seen.add(_shape(prev, names, ctx))
        if _shape(event, names, ctx) in seen:
            steps.append((index, _in_use(event) - _in_use(prev)))
    steps = steps[-settings.leak_window:]
    if len(steps) < settings.leak_min_steps:
        return []
    sizes = [step for _index, step in steps]
    slope = statistics.median(sizes)
    rising = sum(step > 0 for step in sizes) / len(sizes)
    first, last = ctx.history[steps[0][0]], series[-1][1]
    rss_growth = (last.host_rss.after_bytes or 0) - (first.host_rss.after_bytes or 0)
    if (slope < settings.heap_leak_slope_bytes or rising < settings.leak_rising_fraction
            or rss_growth <= 0):
        return []
    cleaned = any(e.kind == "cleanup" and e.ok for e in ctx.history[steps[0][0]:])
    text = _(
        "C heap in use (live malloc blocks) rose {rate} per synthesis over the last {steps} "
        "repeats of one request shape (median; {total} in all, host RSS {rss}){cleaned}: a "
        "possible leak. A light cleanup returns only free memory and a full one only the "
        "model, so no cleanup returns this: restarting the process is the remedy.").format(
            rate=fmt_bytes(slope), steps=len(steps),
            total=fmt_bytes(_in_use(last) - _in_use(first), signed=True),
            rss=fmt_bytes(rss_growth, signed=True),
            cleaned=_("; the cleanups in between did not bring it down") if cleaned else "")
    action = "restart" if settings.restart_available else "none"
    return [Reason("leak.heap", action, "advised", text)]
