"""The rules: each reads the context and says what it finds, in sentences with numbers."""

from __future__ import annotations

import dataclasses
import itertools
import statistics

from monitoring.i18n import _, ngettext
from monitoring.policy.context import _Context, _Room, _room, _series
from monitoring.policy.cpu_heap import cpu_cache
from monitoring.policy.history import HistoryEvent
from monitoring.policy.pending import lighter_request, lighter_words
from monitoring.policy.prediction import PeakPrediction, predict_peak
from monitoring.policy.recommendation import Reason, Recommendation, word
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
        what = _("{name} changes {old} → {new} since the last synthesis: {why}").format(
            name=name, old=old, new=new, why=_(why))
        if action == "none":
            reasons.append(Reason("switch", "none", "info",
                                  _("{what}; nothing to clean.").format(what=what)))
        elif action == "light":
            reasons.append(Reason("switch", "light", "advised", _(
                "{what}. A light cleanup returns what the old one cached.").format(what=what)))
        else:
            cost = ctx.cost_text() if action == "full" else _("the worker restarts and reloads")
            reasons.append(Reason("switch", action, "required", _(
                "{what}. Reset the engine's state with a {action} cleanup ({cost}).").format(
                    what=what, action=word(action), cost=cost)))
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
                _("GPU memory outside PyTorch's allocator (NVML process minus torch reserved: "
                  "CUDA context, ONNX Runtime, cuDNN workspaces) rose {rate} per synthesis over "
                  "the last {count}, to {level}; no cleanup inside the process frees it: restart "
                  "the worker.").format(rate=fmt_bytes(slope), count=len(steps),
                                        level=fmt_bytes(levels[-1]))))
    kinds = [(e.kind, e.oom, e.features.get("level")) for e in ctx.history
             if e.kind in ("synthesis", "cleanup")][-3:]
    if (len(kinds) == 3 and kinds[0][:2] == ("synthesis", True)
            and kinds[1][0] == "cleanup" and kinds[1][2] == "full"
            and kinds[2][:2] == ("synthesis", True)):
        reasons.append(Reason(
            "restart.oom", "restart", "advised",
            _("the last synthesis ran out of memory again after a full cleanup: what is left "
              "is held outside the model (CUDA context, other libraries); a restart of the "
              "worker frees all of it.")))
    return reasons


def _rule_headroom(ctx: _Context) -> list[Reason]:
    """Does the predicted peak fit in free memory; if not, the cheapest action that makes it."""
    if ctx.pending is None:
        return []
    pred, room = ctx.prediction, ctx.room
    where = _("on the GPU") if ctx.domain == "gpu" else _("in RAM")
    if pred is None:
        return [Reason("headroom.unknown", "none", "info", _(
            "no earlier synthesis of {engine} on record: its peak cannot be predicted yet "
            "(this one will measure it).").format(engine=ctx.pending.engine))]
    peak = _peak_text(ctx, pred)
    if room is None:
        return [Reason("headroom.unknown", "none", "info", _(
            "{peak}; free memory {where} is unknown, so whether it fits cannot be told.").format(
                peak=peak, where=where))]
    if room.need_now <= room.free_now:
        return [Reason("headroom.fits", "none", "info", _("{peak}. {takes}.").format(
            peak=peak, takes=_takes(ctx, room)))]
    beyond = ""
    if ctx.domain == "gpu" and ctx.reusable and ctx.settings.reuses_cache:
        beyond = _(" beyond the {size} this process has cached").format(
            size=fmt_bytes(ctx.reusable))
    short = _("{peak}; it needs {need}{beyond}, but only {free} is free {where}").format(
        peak=peak, need=fmt_bytes(room.need_now), beyond=beyond,
        free=fmt_bytes(room.free_now), where=where)
    if room.need_light is not None and room.free_light is not None and (
            room.need_light <= room.free_light):
        return [Reason("headroom.light", "light", "required", _(
            "{short}; a light cleanup returns {size} of cached memory, enough: light cleanup "
            "required.").format(short=short, size=fmt_bytes(ctx.light_frees or 0)))]
    if room.need_full is not None and room.free_full is not None and (
            room.need_full <= room.free_full):
        return [Reason("headroom.full", "full", "required", _(
            "{short}; after a full cleanup and reload it would have {size}, enough: full "
            "cleanup required ({cost}).").format(
                short=short, size=fmt_bytes(room.free_full - (ctx.weights or 0)),
                cost=ctx.cost_text()))]
    return [Reason("headroom.impossible", "none", "required", _impossible_text(ctx, pred))]


def _takes(ctx: _Context, room: _Room) -> str:
    """What the request takes from free memory, and why that differs from the peak, as a
    clause: the upper bound plus the safety margin, plus a reload of the weights, less what the
    process already holds unused and will reuse (the allocator's cache, glibc's freed pool)."""
    where = _("on the GPU") if ctx.domain == "gpu" else _("in RAM")
    reload = (ctx.weights or 0) if ctx.domain == "gpu" and not ctx.loaded else 0
    reused = max(0, room.demand + reload - room.need_now)
    parts = [_("the upper bound plus the {margin} safety margin, {size}").format(
        margin=f"{ctx.settings.safety_margin:.0%}", size=fmt_bytes(room.demand))]
    if reload:
        parts.append(_("plus {size} to load the weights").format(size=fmt_bytes(reload)))
    if reused:
        parts.append(_("less {size} this process already holds unused and reuses").format(
            size=fmt_bytes(reused)))
    if room.need_now > 0:
        return _("It takes {need} of the {free} free {where} ({parts}), so it fits").format(
            need=fmt_bytes(room.need_now), free=fmt_bytes(room.free_now), where=where,
            parts=_("; ").join(parts))
    return _("It fits in memory this process already holds unused ({parts}), leaving the "
             "{free} free {where} untouched").format(parts=_("; ").join(parts),
                                                     free=fmt_bytes(room.free_now), where=where)


def _peak_text(ctx: _Context, pred: PeakPrediction) -> str:
    assert ctx.pending is not None
    if pred.scope == "engine":
        basis = ngettext("{count} earlier synthesis of other configurations",
                         "{count} earlier syntheses of other configurations", pred.samples)
    else:
        basis = ngettext("{count} earlier synthesis", "{count} earlier syntheses", pred.samples)
    margin = (_(", widened {margin} for thin history").format(
        margin=f"{ctx.settings.thin_margin:.0%}") if pred.thin else "")
    return _("predicted peak {peak} (at most {upper}) for {size} {unit}, from {basis}{margin}"
             ).format(peak=fmt_bytes(pred.peak_bytes), upper=fmt_bytes(pred.peak_upper_bytes),
                      size=ctx.pending.size, unit=_(ctx.settings.size_unit),
                      basis=basis.format(count=pred.samples), margin=margin)


def _impossible_text(ctx: _Context, pred: PeakPrediction) -> str:
    room = ctx.room
    assert room is not None and ctx.pending is not None
    demand = round(pred.peak_upper_bytes * (1 + ctx.settings.safety_margin))
    where = _("this GPU") if ctx.domain == "gpu" else _("this machine")
    if room.free_full is not None:
        could = room.free_full - (ctx.weights or 0)
        head = _("predicted peak {demand} (upper bound with margin) exceeds the {size} {where} "
                 "could have even after a full cleanup").format(
                     demand=fmt_bytes(demand), size=fmt_bytes(could), where=where)
    else:
        head = _("predicted peak {demand} (upper bound with margin) exceeds the {size} free, "
                 "and no cleanup is known to make room").format(
                     demand=fmt_bytes(demand), size=fmt_bytes(room.free_now))
    advice = _("shorten the text")
    words = lighter_words(ctx.pending, ctx.settings.lighter)
    if words:
        advice += _(" or {words}").format(words=words)
    lighter = _lighter_fits(ctx)
    if lighter is not None:
        advice += _(" (with it off the prediction is {size}, which fits)").format(
            size=fmt_bytes(lighter))
    return _("{head}: {advice}.").format(head=head, advice=advice)


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
            cached = ctx.domain == "gpu" and bool(ctx.reusable)
            room = ctx.headroom + (ctx.reusable if cached else 0)
            runway = (_("; at this rate the {size} free or cached lasts about {count} more "
                        "syntheses") if cached else
                      _("; at this rate the {size} free lasts about {count} more syntheses")
                      ).format(size=fmt_bytes(room), count=count)
        return [Reason("leak", "full", "advised", _(
            "{figure} left after each synthesis rises {rate} per synthesis (median of the last "
            "{steps} steps between syntheses of this configuration; {total} since the load): "
            "something keeps references (a leak), which only a full cleanup returns{runway}."
        ).format(figure=ctx.figure, rate=rate, steps=leak.steps, total=total, runway=runway))]
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
    what = (_("reserved memory (PyTorch's allocator cache)") if ctx.domain == "gpu"
            else _("host RSS (freed memory glibc and the CPU kernels keep for reuse)"))
    per = (_("synthesis") if len(tail) == 2
           else _("{count} syntheses").format(count=len(tail) - 1))
    figures = {"what": what, "growth": fmt_bytes(growth), "count": len(events),
               "recent": fmt_bytes(recent), "per": per}
    if recent <= ctx.settings.leak_slope_bytes * (len(tail) - 1) / 2:
        return [Reason("cache.levelled", "none", "info", _(
            "{what} grew {growth} over {count} syntheses and has levelled off ({recent} over "
            "the last {per}): a cache that later syntheses reuse, not a leak; no cleanup needed "
            "for it.").format(**figures))]
    return [Reason("cache.growing", "none", "info", _(
        "{what} grew {growth} over {count} syntheses ({recent} over the last {per}) while live "
        "memory did not: inputs of new sizes leave cached blocks of new sizes; it is reused, "
        "not lost.").format(**figures))]


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
            _("{split} ({share} of the {unused} reserved beyond live tensors) sits in free "
              "pieces of partly used blocks (fragmentation): empty_cache() cannot return it, a "
              "full cleanup does; PYTORCH_ALLOC_CONF=expandable_segments:True avoids most of "
              "it.").format(split=fmt_bytes(split), share=f"{split / unused:.0%}",
                            unused=fmt_bytes(unused))))
    retries_now = snap.torch_num_alloc_retries
    recent = [e for e in ctx.history if e.kind == "synthesis"][-ctx.settings.leak_window:]
    then = next((e.alloc_retries_before for e in recent if e.alloc_retries_before is not None),
                None)
    if retries_now is not None and then is not None and retries_now > then:
        reasons.append(Reason(
            "fragmentation.retries", "full", "advised",
            _("the allocator failed to get memory and had to flush its cache and retry "
              "{retries} time(s) over the last {count} syntheses: memory is tight or "
              "fragmented; a full cleanup starts from a clean pool.").format(
                  retries=retries_now - then, count=len(recent))))
    return reasons


def _rule_cache(ctx: _Context) -> list[Reason]:
    """Reserved but unused memory a light cleanup returns (to other processes)."""
    snap, settings = ctx.snapshot, ctx.settings
    if ctx.domain == "cpu":
        return cpu_cache(ctx)
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
        return [Reason("cache.reclaimable", "none", "info", _(
            "this process caches {size} it does not use now; keep it: the next request needs "
            "more than the GPU has free, and PyTorch serves it from this cache first.").format(
                size=fmt_bytes(cache)))]
    if others is not None and others >= settings.other_process_bytes and tight:
        assert ctx.headroom is not None
        return [Reason("cache.reclaimable", "light", "advised", _(
            "this process caches {size} it does not use while other processes hold {others} "
            "and only {free} of the GPU is free: a light cleanup hands the cache to them."
        ).format(size=fmt_bytes(cache), others=fmt_bytes(others),
                 free=fmt_bytes(ctx.headroom)))]
    return [Reason("cache.reclaimable", "light", "info", _(
        "a light cleanup would return {size} of cached, unused memory to the GPU; this process "
        "reuses it anyway, so it only helps other programs (and makes nvidia-smi show it as "
        "free).").format(size=fmt_bytes(cache)))]


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
    frees = _("memory") if full is None else fmt_bytes(full)
    need = ""
    if ctx.room is not None:
        need = _(": the next request {takes}").format(takes=_takes(ctx, ctx.room))
    elif ctx.headroom is not None:
        need = _(": {size} is free").format(size=fmt_bytes(ctx.headroom))
    kept.append(Reason("cost.not_needed", "none", "info", _(
        "a full cleanup would free {frees} but cost {cost} and is not needed now{need}.").format(
            frees=frees, cost=ctx.cost_text(), need=need)))
    return kept


def _full_frees(ctx: _Context) -> int | None:
    if not ctx.loaded:  # CPU: the trim's share (glibc's resident free heap) where known
        return ctx.light_frees if ctx.domain == "gpu" else (ctx.light_frees or 0)
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


