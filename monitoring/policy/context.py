"""Everything the rules read, computed once per question: headroom, reusable cache, leak, room."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from monitoring.i18n import _
from monitoring.policy.history import (
    HistoryEvent,
    _is_loaded,
    _last_load,
    _weights,
)
from monitoring.policy.pending import PendingRequest
from monitoring.policy.prediction import PeakPrediction, _chars, _domain, _matches, predict_peak
from monitoring.policy.settings import PolicySettings, config_names
from monitoring.snapshot import Snapshot
from monitoring.units import fmt_seconds


@dataclass(frozen=True)
class _Leak:
    slope_bytes: float
    steps: int
    since_load_bytes: int


@dataclass(frozen=True)
class _Room:
    """Room for the pending request now, after a light and after a full cleanup."""

    demand: int
    need_now: int
    free_now: int
    need_light: int | None
    free_light: int | None
    need_full: int | None
    free_full: int | None


@dataclass(frozen=True)
class _Context:
    snapshot: Snapshot
    history: Sequence[HistoryEvent]
    pending: PendingRequest | None
    settings: PolicySettings
    domain: str
    engine: str | None
    load: int | None
    loaded: bool
    weights: int | None
    baseline: int | None
    since_load: tuple[HistoryEvent, ...]
    headroom: int | None
    total: int | None
    light_frees: int | None
    reusable: int
    reload_cost: float | None
    prediction: PeakPrediction | None
    leak: _Leak | None
    room: _Room | None

    @property
    def figure(self) -> str:
        """The figure whose retained level tells leaks: live tensors on GPU, RSS on CPU."""
        if self.domain == "gpu":
            return _("torch allocated memory")
        if self.snapshot.host_heap_releasable_bytes is not None:
            return _("host RSS less the free memory the C allocator keeps")
        return _("host RSS")

    def cost_text(self) -> str:
        cost = self.reload_cost
        return (_("an unmeasured reload") if cost is None
                else _("~{time} to reload").format(time=fmt_seconds(cost)))


def _headroom(snapshot: Snapshot, domain: str) -> tuple[int | None, int | None]:
    if domain == "cpu":
        return snapshot.system_available_bytes, snapshot.system_total_bytes
    free, total = snapshot.nvml_device_free_bytes, snapshot.nvml_device_total_bytes
    if free is None and total is not None and snapshot.nvml_device_used_bytes is not None:
        free = total - snapshot.nvml_device_used_bytes
    return free, total


def _light_frees(snapshot: Snapshot, domain: str) -> int | None:
    """GPU: what ``empty_cache()`` returns (measured, else reserved - live - fragmented). CPU:
    what ``malloc_trim`` returns, glibc's resident free heap (an estimate; None: unknown)."""
    if domain == "cpu":
        return snapshot.host_heap_releasable_bytes
    if snapshot.torch_releasable_bytes is not None:
        return snapshot.torch_releasable_bytes
    reserved = snapshot.torch_reserved_bytes
    if reserved is None or snapshot.torch_allocated_bytes is None:
        return None
    live = max(snapshot.torch_allocated_bytes, snapshot.torch_active_bytes or 0)
    return max(0, reserved - live - (snapshot.torch_inactive_split_bytes or 0))


def _reload_cost(history: Sequence[HistoryEvent], engine: str | None) -> float | None:
    costs = [e.duration_s for e in history
             if e.kind == "load" and e.ok and e.duration_s is not None
             and (engine is None or e.features.get("engine") in (None, engine))]
    return statistics.median(costs[-5:]) if costs else None


def _series(ctx: _Context, figure: str) -> list[HistoryEvent]:
    """Ok syntheses since the load (same configuration when a request is pending)."""
    events = [e for e in ctx.since_load if e.kind == "synthesis" and e.ok
              and getattr(e, figure).after_bytes is not None]
    if ctx.pending is not None:
        wanted = ctx.pending.feature_map()
        names = config_names(ctx.settings, wanted)
        events = [e for e in events if _matches(e.features, wanted, names)]
    return events


def _find_leak(ctx: _Context) -> _Leak | None:
    """Retained level rising across syntheses of one configuration (robust: median step).

    On CPU the step of a synthesis with a longer text than any before it since the load is left
    out: glibc's pool grows to each new high-water mark and keeps it, which is a cache, not a
    leak (a leak shows at every step, whatever the length). Where every synthesis of the series
    recorded the heap, its CPU level is RSS less glibc's resident free heap (what a trim would
    have returned), so that memory kept for reuse never reads as a leak.
    """
    settings = ctx.settings
    if not ctx.loaded:
        return None
    figure = "torch_allocated" if ctx.domain == "gpu" else "host_rss"
    events = _series(ctx, figure)
    live = ctx.domain == "cpu" and all(
        e.host_heap_releasable.after_bytes is not None for e in events)

    def level(event: HistoryEvent) -> int:
        value: int = getattr(event, figure).after_bytes
        return value - (event.host_heap_releasable.after_bytes or 0) if live else value

    steps: list[int] = []
    longest = _chars(events[0], settings) if events else None
    for prev, event in itertools.pairwise(events):
        chars = _chars(event, settings)
        new_longest = (ctx.domain == "cpu" and chars is not None
                       and (longest is None or chars > longest))
        if chars is not None:
            longest = chars if longest is None else max(longest, chars)
        if not new_longest:
            steps.append(level(event) - level(prev))
    steps = steps[-settings.leak_window:]
    if len(steps) < settings.leak_min_steps:
        return None
    slope = statistics.median(steps)
    recent = statistics.median(steps[len(steps) // 2:])
    rising = sum(step > 0 for step in steps) / len(steps)
    if (slope < settings.leak_slope_bytes or recent < settings.leak_slope_bytes / 2
            or rising < settings.leak_rising_fraction):
        return None
    last = level(events[-1])
    since = last - ctx.baseline if ctx.baseline is not None else round(slope * len(steps))
    return _Leak(slope_bytes=slope, steps=len(steps), since_load_bytes=max(0, since))


def _room(ctx: _Context) -> _Room | None:
    """What the pending request takes from free memory, now and after each cleanup.

    ``demand`` is the predicted upper bound with the safety margin.

    A full cleanup is an option only while the model is loaded (else there is nothing to drop);
    it is followed by a reload, so the weights count on both sides.
    """
    snap, pred, settings = ctx.snapshot, ctx.prediction, ctx.settings
    if pred is None or ctx.headroom is None:
        return None
    demand = round(pred.peak_upper_bytes * (1 + settings.safety_margin))
    weights = ctx.weights or 0
    need_light = free_light = need_full = free_full = None
    if ctx.domain == "gpu":
        reload = 0 if ctx.loaded else weights
        reusable = ctx.reusable if settings.reuses_cache else 0
        need_now = reload + max(0, demand - reusable)
        if ctx.light_frees is not None:
            need_light, free_light = reload + demand, ctx.headroom + ctx.light_frees
        if ctx.loaded and snap.torch_reserved_bytes is not None:
            need_full, free_full = weights + demand, ctx.headroom + snap.torch_reserved_bytes
        return _Room(demand, need_now, ctx.headroom, need_light, free_light, need_full,
                     free_full)
    rss = snap.host_rss_bytes
    if rss is None or ctx.baseline is None:
        return _Room(demand, demand, ctx.headroom, None, None, None, None)
    pool = max(0, rss - ctx.baseline)  # above the post-load level: glibc's pool (and leaks)
    leaked = min(ctx.leak.since_load_bytes, pool) if ctx.leak is not None else 0
    need_now = max(0, ctx.baseline + leaked + demand - rss)
    if ctx.loaded:
        need_full, free_full = weights + demand, ctx.headroom + pool + weights
    return _Room(demand, need_now, ctx.headroom, None, None, need_full, free_full)


def _context(snapshot: Snapshot, history: Sequence[HistoryEvent], pending: PendingRequest | None,
             settings: PolicySettings) -> _Context:
    domain = _domain(snapshot, pending)
    engine = pending.engine if pending is not None else None
    load = _last_load(history, engine)
    if engine is None and load is not None:
        engine = history[load].features.get("engine")
    loaded = _is_loaded(history, load)
    baseline = None
    if load is not None:
        change = history[load].torch_allocated if domain == "gpu" else history[load].host_rss
        baseline = change.after_bytes
    headroom, total = _headroom(snapshot, domain)
    light = _light_frees(snapshot, domain)
    ctx = _Context(
        snapshot=snapshot, history=history, pending=pending, settings=settings, domain=domain,
        engine=engine, load=load, loaded=loaded, weights=_weights(history, load),
        baseline=baseline, since_load=tuple(history[load + 1:] if load is not None else history),
        headroom=headroom, total=total, light_frees=light, reusable=light or 0,
        reload_cost=_reload_cost(history, engine),
        prediction=None if pending is None else predict_peak(snapshot, history, pending,
                                                             settings),
        leak=None, room=None)
    ctx = dataclasses.replace(ctx, leak=_find_leak(ctx))
    return dataclasses.replace(ctx, room=_room(ctx))


