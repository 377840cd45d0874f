"""Predicting a request's memory demand from earlier ones (least squares per configuration)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitoring.policy.history import HistoryEvent, _is_loaded, _last_load, _weights
from monitoring.policy.pending import PendingRequest
from monitoring.policy.settings import PolicySettings, config_names
from monitoring.snapshot import Snapshot


@dataclass(frozen=True)
class PeakPrediction:
    """The predicted memory of one request.

    Attributes:
        domain: ``gpu`` (torch allocator, live tensors) or ``cpu`` (host RSS).
        peak_bytes: Demand: bytes the request needs on top of what the process holds live (GPU:
            allocated peak above the start; CPU: peak RSS above the post-load RSS).
        peak_upper_bytes: Conservative upper bound of ``peak_bytes`` (residuals, thin margin).
        level_bytes: Predicted absolute peak of the figure (GPU: torch allocated; CPU: RSS, at
            least the RSS now), or None when the snapshot lacks the figure.
        level_upper_bytes: Same, from the upper bound.
        samples: Syntheses the fit used.
        scope: ``configuration`` (same configuration) or ``engine`` (other configurations of
            the engine: no synthesis of this one yet; always thin).
        thin: Whether the thin-history margin was applied.
        slope_bytes_per_char: Fitted bytes per character of text.
        intercept_bytes: Fitted bytes at zero characters.
    """

    domain: str
    peak_bytes: int
    peak_upper_bytes: int
    level_bytes: int | None
    level_upper_bytes: int | None
    samples: int
    scope: str
    thin: bool
    slope_bytes_per_char: float
    intercept_bytes: float


def _domain(snapshot: Snapshot, pending: PendingRequest | None) -> str:
    device = pending.device if pending is not None else None
    if device is not None:
        return "cpu" if device == "cpu" else "gpu"
    return "gpu" if snapshot.torch_reserved_bytes is not None else "cpu"


def _matches(features: Mapping[str, Any], wanted: Mapping[str, Any], names: Sequence[str]) -> bool:
    return all(wanted.get(n) is None or features.get(n) == wanted.get(n) for n in names)


def _chars(event: HistoryEvent, settings: PolicySettings) -> int | None:
    """The event's size (``settings.size_feature``), or None when it did not record one."""
    value = event.features.get(settings.size_feature)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _demand(event: HistoryEvent, domain: str, baseline: int | None,
            settings: PolicySettings) -> int | None:
    """The demand one synthesis shows (see the module docstring), or None when it shows none."""
    if domain == "gpu":
        change = event.torch_allocated
        if change.peak_bytes is None or change.before_bytes is None:
            return None
        return max(0, change.peak_bytes - change.before_bytes)
    rss = event.host_rss
    if rss.peak_bytes is None or rss.before_bytes is None:
        return None
    if baseline is None:
        return max(0, rss.peak_bytes - rss.before_bytes)
    if rss.peak_bytes - rss.before_bytes <= settings.cpu_censor_bytes:
        return None  # served from memory already held: only "no more than that" is known
    return max(0, rss.peak_bytes - baseline)


def _observations(history: Sequence[HistoryEvent], pending: PendingRequest, domain: str,
                  settings: PolicySettings) -> tuple[list[tuple[int, int]], str]:
    """(size, demand) of earlier ok syntheses: same configuration, else same engine."""
    wanted = pending.feature_map()
    names = config_names(settings, wanted)
    same: list[tuple[int, int]] = []
    related: list[tuple[int, int]] = []
    baseline: int | None = None
    for event in history:
        if event.kind == "load" and event.ok:
            baseline = event.host_rss.after_bytes
            continue
        chars = _chars(event, settings)
        if event.kind != "synthesis" or not event.ok or chars is None:
            continue
        if not _matches(event.features, wanted, ("engine", "device")):
            continue
        demand = _demand(event, domain, baseline, settings)
        if demand is None:
            continue
        related.append((chars, demand))
        if _matches(event.features, wanted, names):
            same.append((chars, demand))
    if same:
        return same[-settings.fit_window:], "configuration"
    return related[-settings.fit_window:], "engine"


def _fit(points: Sequence[tuple[int, int]], k: float) -> tuple[float, float, float]:
    """Least squares demand = a + b * chars (b >= 0); returns (a, b, residual bound)."""
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
                ) if sxx > 0 else 0.0
    intercept = mean_y - slope * mean_x
    residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
    rms = math.sqrt(statistics.fmean(r * r for r in residuals))
    return intercept, slope, max(k * rms, max(residuals), 0.0)




def predict_peak(snapshot: Snapshot, history: Sequence[HistoryEvent], pending: PendingRequest,
                 settings: PolicySettings | None = None) -> PeakPrediction | None:
    """Predict the pending request's demand from earlier syntheses; None with no history.

    The same function :func:`recommend` uses; benchmarks call it to score its accuracy.
    """
    settings = settings or PolicySettings()
    domain = _domain(snapshot, pending)
    points, scope = _observations(history, pending, domain, settings)
    if not points:
        return None
    intercept, slope, spread = _fit(points, settings.residual_k)
    peak = max(0.0, intercept + slope * pending.size)
    upper = peak + spread
    thin = scope == "engine" or len(points) < settings.thin_history
    if thin:
        upper *= 1 + settings.thin_margin
    load = _last_load(history, pending.engine)
    loaded = _is_loaded(history, load)
    level = level_upper = None
    if domain == "gpu" and snapshot.torch_allocated_bytes is not None:
        weights = 0 if loaded else (_weights(history, load) or 0)
        level = snapshot.torch_allocated_bytes + weights + peak
        level_upper = snapshot.torch_allocated_bytes + weights + upper
    elif domain == "cpu" and snapshot.host_rss_bytes is not None:
        now = snapshot.host_rss_bytes
        base = history[load].host_rss.after_bytes if load is not None else None
        if base is None:
            level, level_upper = now + peak, now + upper
        else:  # served from the pool up to its size; every request touches a few new pages
            level = max(now, base + peak)
            level_upper = max(now + settings.cpu_censor_bytes, base + upper)
    return PeakPrediction(
        domain=domain, peak_bytes=round(peak), peak_upper_bytes=round(upper),
        level_bytes=None if level is None else round(level),
        level_upper_bytes=None if level_upper is None else round(level_upper),
        samples=len(points), scope=scope, thin=thin, slope_bytes_per_char=slope,
        intercept_bytes=intercept)


