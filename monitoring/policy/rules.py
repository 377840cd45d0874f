"""The rules: each reads the context and says what it finds, in sentences with numbers."""

from __future__ import annotations

import dataclasses
import itertools
import statistics

from monitoring.policy.context import _Context, _Room, _room, _series
from monitoring.policy.history import HistoryEvent
from monitoring.policy.pending import lighter_request, lighter_words
from monitoring.policy.prediction import PeakPrediction, predict_peak
from monitoring.policy.recommendation import Reason, Recommendation
from monitoring.policy.settings import ACTIONS, URGENCIES
from monitoring.units import fmt_bytes

# ----------------------------------------------------------------------------- rules


def _rule_switch(ctx: _Context) -> list[Reason]:
    """A feature changed since the last synthesis the model served whose change the engine
    declared to make its state stale (``switch_rules``)."""
    if ctx.pending is None or not ctx.loaded:
        return []
    last = next((e for e in reversed(ctx.since_load) if e.kind == "synthesis"), None)
    if last is None:
        return []
    wanted = ctx.pending.feature_map()
    reasons = []
    for name, action, why in ctx.settings.switch_rules:
        old, new = last.features.get(name), wanted.get(name)
        if old is None or new is None or old == new:
            continue
        if action == "restart" and not ctx.settings.restart_available:
            action = "full"
        what = f"{name} changes {old} → {new} since the last synthesis: {why}"
        if action == "none":
            reasons.append(Reason("switch", "none", "info", f"{what}; nothing to clean."))
        elif action == "light":
            reasons.append(Reason("switch", "light", "advised",
                                  f"{what}. A light cleanup returns what the old one cached."))
        else:
            cost = ctx.cost_text() if action == "full" else "the worker restarts and reloads"
            reasons.append(Reason("switch", action, "required",
                                  f"{what}. Reset the engine's state with a {action} cleanup "
                                  f"({cost})."))
    return reasons


def _series_since_load(ctx: _Context) -> list[HistoryEvent]:
    return [e for e in ctx.since_load if e.kind == "synthesis" and e.ok]


def _rule_restart(ctx: _Context) -> list[Reason]:
    """Memory only a restart frees: non-torch GPU memory (NVML process minus torch reserved)
    that keeps growing across syntheses, or an out-of-memory error that a full cleanup did not
    cure."""
    if not ctx.settings.restart_available:
        return []
    reasons = []
    levels = [e.nvml_process.after_bytes - e.torch_reserved.after_bytes
              for e in _series_since_load(ctx)
              if e.nvml_process.after_bytes is not None
              and e.torch_reserved.after_bytes is not None]
    steps = [b - a for a, b in itertools.pairwise(levels)][-ctx.settings.leak_window:]
    if len(steps) >= ctx.settings.leak_min_steps:
        slope = statistics.median(steps)
        rising = sum(step > 0 for step in steps) / len(steps)
        if slope >= ctx.settings.leak_slope_bytes and rising >= ctx.settings.leak_rising_fraction:
            reasons.append(Reason(
                "restart.non_torch", "restart", "advised",
                f"GPU memory outside PyTorch's allocator (NVML process minus torch reserved: "
                f"CUDA context, ONNX Runtime, cuDNN workspaces) rose {fmt_bytes(slope)} per "
                f"synthesis over the last {len(steps)}, to {fmt_bytes(levels[-1])}; no cleanup "
                f"inside the process frees it: restart the worker."))
    kinds = [(e.kind, e.oom, e.features.get("level")) for e in ctx.history
             if e.kind in ("synthesis", "cleanup")][-3:]
    if (len(kinds) == 3 and kinds[0][:2] == ("synthesis", True)
            and kinds[1][0] == "cleanup" and kinds[1][2] == "full"
            and kinds[2][:2] == ("synthesis", True)):
        reasons.append(Reason(
            "restart.oom", "restart", "advised",
            "the last synthesis ran out of memory again after a full cleanup: what is left "
            "is held outside the model (CUDA context, other libraries); a restart of the "
            "worker frees all of it."))
    return reasons


def _rule_headroom(ctx: _Context) -> list[Reason]:
    """Does the predicted peak fit in free memory; if not, the cheapest action that makes it."""
    if ctx.pending is None:
        return []
    pred, room = ctx.prediction, ctx.room
    where = "on the GPU" if ctx.domain == "gpu" else "in RAM"
    if pred is None:
        return [Reason("headroom.unknown", "none", "info",
                       f"no earlier synthesis of {ctx.pending.engine} on record: its peak cannot "
                       f"be predicted yet (this one will measure it).")]
    peak = _peak_text(ctx, pred)
    if room is None:
        return [Reason("headroom.unknown", "none", "info",
                       f"{peak}; free memory {where} is unknown, so whether it fits cannot "
                       f"be told.")]
    if room.need_now <= room.free_now:
        return [Reason("headroom.fits", "none", "info", f"{peak}. {_takes(ctx, room)}.")]
    beyond = ""
    if ctx.domain == "gpu" and ctx.reusable and ctx.settings.reuses_cache:
        beyond = f" beyond the {fmt_bytes(ctx.reusable)} this process has cached"
    short = (f"{peak}; it needs {fmt_bytes(room.need_now)}{beyond}, but only "
             f"{fmt_bytes(room.free_now)} is free {where}")
    if room.need_light is not None and room.free_light is not None and (
            room.need_light <= room.free_light):
        return [Reason("headroom.light", "light", "required",
                       f"{short}; a light cleanup returns {fmt_bytes(ctx.light_frees or 0)} of "
                       f"cached memory, enough: light cleanup required.")]
    if room.need_full is not None and room.free_full is not None and (
            room.need_full <= room.free_full):
        return [Reason("headroom.full", "full", "required",
                       f"{short}; after a full cleanup and reload it would have "
                       f"{fmt_bytes(room.free_full - (ctx.weights or 0))}, enough: full "
                       f"cleanup required ({ctx.cost_text()}).")]
    return [Reason("headroom.impossible", "none", "required", _impossible_text(ctx, pred))]


def _takes(ctx: _Context, room: _Room) -> str:
    """What the request takes from free memory, and why that differs from the peak, as a
    clause: the upper bound plus the safety margin, plus a reload of the weights, less what the
    process already holds unused and will reuse (the allocator's cache, glibc's freed pool)."""
    where = "on the GPU" if ctx.domain == "gpu" else "in RAM"
    reload = (ctx.weights or 0) if ctx.domain == "gpu" and not ctx.loaded else 0
    reused = max(0, room.demand + reload - room.need_now)
    parts = [f"the upper bound plus the {ctx.settings.safety_margin:.0%} safety margin, "
             f"{fmt_bytes(room.demand)}"]
    if reload:
        parts.append(f"plus {fmt_bytes(reload)} to load the weights")
    if reused:
        parts.append(f"less {fmt_bytes(reused)} this process already holds unused and reuses")
    if room.need_now > 0:
        return (f"It takes {fmt_bytes(room.need_now)} of the {fmt_bytes(room.free_now)} free "
                f"{where} ({'; '.join(parts)}), so it fits")
    return (f"It fits in memory this process already holds unused ({'; '.join(parts)}), "
            f"leaving the {fmt_bytes(room.free_now)} free {where} untouched")


def _peak_text(ctx: _Context, pred: PeakPrediction) -> str:
    assert ctx.pending is not None
    basis = f"{pred.samples} earlier synthes{'is' if pred.samples == 1 else 'es'}"
    if pred.scope == "engine":
        basis += " of other configurations"
    margin = f", widened {ctx.settings.thin_margin:.0%} for thin history" if pred.thin else ""
    return (f"predicted peak {fmt_bytes(pred.peak_bytes)} (at most "
            f"{fmt_bytes(pred.peak_upper_bytes)}) for {ctx.pending.size} "
            f"{ctx.settings.size_unit}, "
            f"from {basis}{margin}")


def _impossible_text(ctx: _Context, pred: PeakPrediction) -> str:
    room = ctx.room
    assert room is not None and ctx.pending is not None
    demand = round(pred.peak_upper_bytes * (1 + ctx.settings.safety_margin))
    where = "this GPU" if ctx.domain == "gpu" else "this machine"
    if room.free_full is not None:
        could = room.free_full - (ctx.weights or 0)
        head = (f"predicted peak {fmt_bytes(demand)} (upper bound with margin) exceeds the "
                f"{fmt_bytes(could)} {where} could have even after a full cleanup")
    else:
        head = (f"predicted peak {fmt_bytes(demand)} (upper bound with margin) exceeds the "
                f"{fmt_bytes(room.free_now)} free, and no cleanup is known to make room")
    advice = "shorten the text"
    words = lighter_words(ctx.pending, ctx.settings.lighter)
    if words:
        advice += f" or {words}"
    lighter = _lighter_fits(ctx)
    if lighter is not None:
        advice += f" (with it off the prediction is {fmt_bytes(lighter)}, which fits)"
    return f"{head}: {advice}."


def _lighter_fits(ctx: _Context) -> int | None:
    """Predicted demand of the lighter configuration when it fits now or after a full cleanup."""
    assert ctx.pending is not None
    lighter = lighter_request(ctx.pending, ctx.settings.lighter)
    if lighter is None:
        return None
    pred = predict_peak(ctx.snapshot, ctx.history, lighter, ctx.settings)
    if pred is None or pred.scope != "configuration":
        return None
    room = _room(dataclasses.replace(ctx, pending=lighter, prediction=pred))
    if room is None:
        return None
    fits = room.need_now <= room.free_now or (
        room.need_full is not None and room.free_full is not None
        and room.need_full <= room.free_full)
    return pred.peak_upper_bytes if fits else None


def _rule_leak(ctx: _Context) -> list[Reason]:
    """Retained memory that keeps rising is a leak; cache growth that levels off is not."""
    leak = ctx.leak
    if leak is not None:
        total = fmt_bytes(leak.since_load_bytes)
        rate = fmt_bytes(leak.slope_bytes)
        runway = ""
        count = _runway(ctx)
        if count is not None:
            cached = " free or cached" if ctx.domain == "gpu" and ctx.reusable else " free"
            room = ctx.headroom + (ctx.reusable if cached == " free or cached" else 0)
            runway = (f"; at this rate the {fmt_bytes(room)}{cached} lasts about {count} more "
                      f"syntheses")
        return [Reason("leak", "full", "advised",
                       f"{ctx.figure} left after each synthesis rises {rate} per synthesis "
                       f"(median of the last {leak.steps} steps between syntheses of this "
                       f"configuration; {total} since the load): something keeps references "
                       f"(a leak), which only a full cleanup returns{runway}.")]
    return _cache_growth(ctx)


def _runway(ctx: _Context) -> int | None:
    """Syntheses a detected leak leaves room for (free plus reusable cache), or None."""
    if ctx.leak is None or ctx.leak.slope_bytes <= 0 or ctx.headroom is None:
        return None
    room = ctx.headroom + (ctx.reusable if ctx.domain == "gpu" else 0)
    return int(room // ctx.leak.slope_bytes)


def _cache_growth(ctx: _Context) -> list[Reason]:
    if not ctx.loaded:
        return []
    figure = "torch_reserved" if ctx.domain == "gpu" else "host_rss"
    events = _series(dataclasses.replace(ctx, pending=None), figure)
    if len(events) < 3:
        return []
    first = getattr(events[0], figure)
    start = first.before_bytes if first.before_bytes is not None else first.after_bytes
    levels = [getattr(e, figure).after_bytes for e in events]
    growth = levels[-1] - start
    if growth < ctx.settings.cache_note_bytes:
        return []
    tail = levels[-min(4, len(levels)):]
    recent = tail[-1] - tail[0]
    what = ("reserved memory (PyTorch's allocator cache)" if ctx.domain == "gpu"
            else "host RSS (freed memory glibc and the CPU kernels keep for reuse)")
    per = "synthesis" if len(tail) == 2 else f"{len(tail) - 1} syntheses"
    if recent <= ctx.settings.leak_slope_bytes * (len(tail) - 1) / 2:
        return [Reason("cache.levelled", "none", "info",
                       f"{what} grew {fmt_bytes(growth)} over {len(events)} syntheses and has "
                       f"levelled off ({fmt_bytes(recent)} over the last {per}): a cache that "
                       f"later syntheses reuse, not a leak; no cleanup needed for it.")]
    return [Reason("cache.growing", "none", "info",
                   f"{what} grew {fmt_bytes(growth)} over {len(events)} syntheses "
                   f"({fmt_bytes(recent)} over the last {per}) while live memory did not: "
                   f"inputs of new sizes leave cached blocks of new sizes; it is reused, "
                   f"not lost.")]


def _rule_fragmentation(ctx: _Context) -> list[Reason]:
    """Much memory in free pieces of partly used segments, or allocation retries rising."""
    snap, settings = ctx.snapshot, ctx.settings
    if ctx.domain != "gpu" or not ctx.loaded:
        return []
    reasons = []
    split, reserved = snap.torch_inactive_split_bytes, snap.torch_reserved_bytes
    unused = None
    if reserved is not None and snap.torch_allocated_bytes is not None:
        unused = reserved - snap.torch_allocated_bytes
    if split is not None and unused and split >= settings.fragmentation_bytes and (
            split >= settings.fragmentation_fraction * unused):
        reasons.append(Reason(
            "fragmentation", "full", "advised",
            f"{fmt_bytes(split)} ({split / unused:.0%} of the {fmt_bytes(unused)} reserved beyond "
            f"live tensors) sits in free pieces of partly used blocks (fragmentation): "
            f"empty_cache() cannot return it, a full cleanup does; "
            f"PYTORCH_ALLOC_CONF=expandable_segments:True avoids most of it."))
    retries_now = snap.torch_num_alloc_retries
    recent = [e for e in ctx.history if e.kind == "synthesis"][-ctx.settings.leak_window:]
    then = next((e.alloc_retries_before for e in recent if e.alloc_retries_before is not None),
                None)
    if retries_now is not None and then is not None and retries_now > then:
        reasons.append(Reason(
            "fragmentation.retries", "full", "advised",
            f"the allocator failed to get memory and had to flush its cache and retry "
            f"{retries_now - then} time(s) over the last {len(recent)} syntheses: memory is "
            f"tight or fragmented; a full cleanup starts from a clean pool."))
    return reasons


def _rule_cache(ctx: _Context) -> list[Reason]:
    """Reserved but unused memory a light cleanup returns (to other processes)."""
    snap, settings = ctx.snapshot, ctx.settings
    if ctx.domain == "cpu":
        rss = snap.host_rss_bytes
        if rss is None or ctx.baseline is None or not ctx.loaded:
            return []
        above = rss - ctx.baseline
        if above < settings.reclaimable_bytes:
            return []
        return [Reason("cache.reclaimable", "light", "info",
                       f"host RSS is {fmt_bytes(above)} above its level after the load; part of "
                       f"it may be freed memory glibc keeps for reuse, which a light cleanup "
                       f"(malloc_trim) returns to the system (how much cannot be known "
                       f"beforehand).")]
    cache = ctx.light_frees
    if cache is None or cache < settings.reclaimable_bytes:
        return []
    others = None
    if snap.nvml_device_used_bytes is not None and snap.nvml_process_used_bytes is not None:
        others = snap.nvml_device_used_bytes - snap.nvml_process_used_bytes
    tight = (ctx.headroom is not None and ctx.total is not None
             and ctx.headroom < settings.low_free_fraction * ctx.total)
    needed = ctx.room is not None and ctx.room.demand > ctx.room.free_now
    if needed:
        return [Reason("cache.reclaimable", "none", "info",
                       f"this process caches {fmt_bytes(cache)} it does not use now; keep it: "
                       f"the next request needs more than the GPU has free, and PyTorch serves "
                       f"it from this cache first.")]
    if others is not None and others >= settings.other_process_bytes and tight:
        assert ctx.headroom is not None
        return [Reason("cache.reclaimable", "light", "advised",
                       f"this process caches {fmt_bytes(cache)} it does not use while other "
                       f"processes hold {fmt_bytes(others)} and only {fmt_bytes(ctx.headroom)} "
                       f"of the GPU is free: a light cleanup hands the cache to them.")]
    return [Reason("cache.reclaimable", "light", "info",
                   f"a light cleanup would return {fmt_bytes(cache)} of cached, unused memory to "
                   f"the GPU; this process reuses it anyway, so it only helps other programs "
                   f"(and makes nvidia-smi show it as free).")]


def _comfortable(ctx: _Context) -> bool:
    """Whether a full cleanup buys no room needed now.

    With a pending request: it takes at most ``comfort_fraction`` of the free memory. Without
    one: free memory is not tight. Either way a leak must leave ``leak_runway`` syntheses of room.
    """
    if ctx.headroom is None:
        return False
    runway = _runway(ctx)
    if runway is not None and runway < ctx.settings.leak_runway:
        return False
    if ctx.pending is None:
        return ctx.total is None or ctx.headroom >= ctx.settings.low_free_fraction * ctx.total
    return ctx.room is not None and (
        ctx.room.need_now <= ctx.settings.comfort_fraction * ctx.room.free_now)


def _rule_cost(ctx: _Context, reasons: list[Reason]) -> list[Reason]:
    """Downgrade advised full cleanups whose reload cost buys no room needed now."""
    advised_full = [r for r in reasons if r.action == "full" and r.urgency == "advised"]
    if not advised_full or any(r.urgency == "required" for r in reasons):
        return reasons
    if not _comfortable(ctx):
        return reasons
    kept = [dataclasses.replace(r, action="none", urgency="info") if r in advised_full else r
            for r in reasons]
    full = _full_frees(ctx)
    frees = "memory" if full is None else fmt_bytes(full)
    need = ""
    if ctx.room is not None:
        need = f": the next request {_takes(ctx, ctx.room)}"
    elif ctx.headroom is not None:
        need = f": {fmt_bytes(ctx.headroom)} is free"
    kept.append(Reason("cost.not_needed", "none", "info",
                       f"a full cleanup would free {frees} but cost {ctx.cost_text()} and is "
                       f"not needed now{need}."))
    return kept


def _full_frees(ctx: _Context) -> int | None:
    if not ctx.loaded:
        return ctx.light_frees if ctx.domain == "gpu" else 0
    if ctx.weights is None:
        return None
    return ctx.weights + (ctx.light_frees or 0)


def _combine(ctx: _Context, reasons: list[Reason]) -> Recommendation:
    order = sorted(reasons, key=lambda r: (-URGENCIES.index(r.urgency), -ACTIONS.index(r.action)))
    urgency = order[0].urgency if order else "info"
    action = order[0].action if order else "none"
    lighter = None
    if ctx.pending is not None and any(r.rule == "headroom.impossible" for r in reasons):
        lighter = (lighter_request(ctx.pending, ctx.settings.lighter)
                   if _lighter_fits(ctx) is not None else None)
    return Recommendation(
        action=action, urgency=urgency, reasons=tuple(order), mode=ctx.settings.mode,
        domain=ctx.domain, prediction=ctx.prediction,
        needed_bytes=None if ctx.room is None else ctx.room.need_now,
        headroom_bytes=ctx.headroom, light_frees_bytes=ctx.light_frees,
        full_frees_bytes=_full_frees(ctx), reload_cost_s=ctx.reload_cost, lighter=lighter)


