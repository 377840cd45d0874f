"""When to clean, and why: a pure policy over measured memory.

:func:`recommend` takes a :class:`~monitoring.snapshot.Snapshot` (memory now), the recorded
events (:class:`HistoryEvent` rows; :func:`history_from_frame` converts ``Store.events()``), the
next request described by generic features (:class:`PendingRequest`) and
:class:`PolicySettings`, and returns a frozen :class:`Recommendation`: an action (``none``,
``light``, ``full``), an urgency (``info``, ``advised``, ``required``), and the reasons, each a
plain sentence with its numbers and a machine-readable rule id. It reads no clock, no file and no
probe: the same arguments always give the same answer.

The memory model, per domain (GPU when the snapshot has torch allocator figures, else CPU):

- *Demand* of a request: the bytes it needs on top of what the process holds live. GPU: torch
  allocator peak of live tensors above their level at the start (exact; the tracker resets the
  peak). CPU: peak RSS (``VmHWM``) above the RSS right after the model loaded, taken only from
  syntheses whose peak rose above their start (glibc keeps freed memory and serves later requests
  from it, so a synthesis that stayed inside that pool only says "no more than the pool"). Demand
  is fitted per configuration by least squares against the text length; the upper bound adds the
  larger of ``residual_k`` root-mean-square residuals and the largest residual, and is widened by
  ``thin_margin`` when fewer than ``thin_history`` syntheses back it.
- *Headroom*: free memory now. GPU: NVML device-wide free bytes. CPU: the machine's available RAM.
- *What the request takes from the headroom*: demand minus what the process already holds unused
  and will reuse: PyTorch's cache (reserved, not allocated, not fragmented: the allocator serves
  from it, and flushes it and retries before raising out-of-memory), glibc's pool on CPU (RSS above
  the post-load level). So a light cleanup (``empty_cache``, ``malloc_trim``) never makes a request
  fit that does not fit already: it hands the cache to *other* processes. Set
  ``PolicySettings.reuses_cache=False`` for an allocator that does not reuse its cache that way;
  then a light cleanup can make room.
- *After a full cleanup* the model reloads: its weights come back, but everything else the process
  held goes (cache, fragmentation, memory retained since the load), so that is the room a full
  cleanup can make for the request.

Rules (ids in :data:`RULES`): headroom (``headroom.*``), reclaimable cache (``cache.reclaimable``),
cache growth that levels off versus a leak (``cache.levelled``, ``cache.growing``, ``leak``),
fragmentation (``fragmentation``, ``fragmentation.retries``), configuration switch (``switch``),
and cost (``cost.not_needed``: a full cleanup is never advised when nothing needs the room now).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitoring.records import Change, EventRecord
from monitoring.snapshot import Snapshot

MiB = 1 << 20
GiB = 1 << 30

ACTIONS = ("none", "light", "full", "restart")
"""Cleanup actions, cheapest first (``restart``: end the process that holds the model, for
models run in a worker process; only it frees the CUDA context and what only NVML sees)."""
URGENCIES = ("info", "advised", "required")
"""Urgencies, weakest first."""
MODES = ("advise", "auto", "off")
"""``advise``: only recommend; ``auto``: the caller runs a required action before the
synthesis (see :func:`should_act`); ``off``: no rules at all."""
RULES = (
    "headroom.fits",
    "headroom.light",
    "headroom.full",
    "headroom.impossible",
    "headroom.unknown",
    "cache.reclaimable",
    "cache.levelled",
    "cache.growing",
    "leak",
    "fragmentation",
    "fragmentation.retries",
    "switch",
    "restart.non_torch",
    "restart.oom",
    "cost.not_needed",
    "policy.off",
)
"""Every rule id a :class:`Reason` can carry."""

_FIGURES = (
    "torch_allocated",
    "torch_reserved",
    "torch_inactive_split",
    "host_rss",
    "nvml_process",
    "nvml_device",
)
_UNKNOWN = Change(None, None)
_SWITCH_WHY = {
    "sample_rate": "engines that cache DSP tables per device only would reuse tables of the "
    "wrong size (GLM-TTS keys its mel filter bank and Hann window by device, not by rate)",
    "engine": "the previous engine's model and caches serve no request of the new one",
    "voice": "speaker caches built for the previous voice would be reused",
    "reference_audio": "prompt caches built from the previous reference recording would be "
    "reused",
}


def fmt_bytes(value: float) -> str:
    """Bytes for a sentence: ``9771050598`` -> ``9.1 GiB``, ``62601836`` -> ``59.7 MiB``."""
    sign = "-" if value < 0 else ""
    size = abs(float(value))
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= scale:
            scaled = size / scale
            return f"{sign}{scaled:.{0 if scaled >= 100 else 1}f} {unit}"
    return f"{sign}{size:.0f} B"


def fmt_seconds(value: float) -> str:
    """Seconds for a sentence: ``4.23`` -> ``4.2 s``, ``0.31`` -> ``0.31 s``."""
    return f"{value:.2f} s" if value < 1 else f"{value:.1f} s"


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PolicySettings:
    """Thresholds and switches of the policy (all byte figures in bytes).

    Attributes:
        mode: One of :data:`MODES`.
        safety_margin: Fraction added to the predicted upper bound before it is compared with
            free memory (covers what the fit does not see: workspaces, other processes' growth).
        thin_history: Fewer earlier syntheses of the configuration than this is thin history.
        thin_margin: Extra fraction on the upper bound when history is thin.
        residual_k: Upper bound = fit + max(``residual_k`` x RMS residual, largest residual).
        fit_window: Newest syntheses of the configuration the fit uses.
        config_features: Features that select a configuration (fit and leak trend). A None value
            in the pending request matches any recorded value.
        switch_rules: ``(feature, action, why)`` for each feature whose change since the last
            synthesis makes state the model's process holds stale: ``action`` ``full`` or
            ``restart`` is then required first, ``light`` advised, ``none`` only noted (the
            engine handles the switch itself). Engines declare these in their capabilities;
            the defaults are for an engine that declares nothing.
        restart_available: Whether the model runs in a process that can be restarted (an
            engine worker): enables the ``restart`` rules.
        reuses_cache: Whether the allocator reuses its cache before failing (PyTorch's does), so
            cached bytes count as room for the request and a light cleanup adds none.
        cpu_censor_bytes: A CPU synthesis whose peak RSS rose less than this above its start was
            served from memory the process already held: no demand observation.
        leak_window: Newest same-configuration syntheses the leak trend looks at.
        leak_min_steps: Fewest synthesis-to-synthesis steps needed to call a leak.
        leak_slope_bytes: Median retained growth per synthesis from which growth is a leak.
        leak_rising_fraction: Fraction of steps that must rise (monotone-ish growth).
        leak_runway: A leak that leaves room for fewer syntheses than this needs a full cleanup
            soon, even when the next request fits.
        cache_note_bytes: Growth of the cache (reserved on GPU, RSS on CPU) worth a note.
        reclaimable_bytes: Reclaimable cache worth a note.
        low_free_fraction: Free memory below this fraction of the total is tight.
        other_process_bytes: Memory other processes hold on the GPU from which they count.
        comfort_fraction: A request that takes at most this fraction of the free memory fits
            comfortably (a full cleanup then buys nothing needed now); without a pending
            request, free memory under ``low_free_fraction`` of the total is what needs room.
        fragmentation_bytes: Inactive-split bytes from which fragmentation is reported...
        fragmentation_fraction: ...when they are also at least this fraction of the memory
            reserved beyond live tensors (reserved - allocated; the weights would drown a
            fraction of all reserved memory).
    """

    mode: str = "advise"
    safety_margin: float = 0.10
    thin_history: int = 5
    thin_margin: float = 0.5
    residual_k: float = 2.0
    fit_window: int = 40
    config_features: tuple[str, ...] = (
        "engine", "device", "sample_rate", "use_kv_cache", "voice", "reference_audio",
    )
    switch_rules: tuple[tuple[str, str, str], ...] = tuple(
        (name, "full", why) for name, why in _SWITCH_WHY.items())
    restart_available: bool = False
    reuses_cache: bool = True
    cpu_censor_bytes: int = 4 * MiB
    leak_window: int = 8
    leak_min_steps: int = 4
    leak_slope_bytes: int = 8 * MiB
    leak_rising_fraction: float = 0.7
    leak_runway: int = 20
    cache_note_bytes: int = 64 * MiB
    reclaimable_bytes: int = 256 * MiB
    low_free_fraction: float = 0.10
    other_process_bytes: int = 256 * MiB
    comfort_fraction: float = 0.5
    fragmentation_bytes: int = 512 * MiB
    fragmentation_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        for name in ("safety_margin", "thin_margin", "residual_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("thin_history", "fit_window", "leak_window", "leak_min_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("low_free_fraction", "comfort_fraction", "fragmentation_fraction",
                     "leak_rising_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")


# ----------------------------------------------------------------------------- requests


_NOT_CONFIG = frozenset({"seed", "text", "audio_s", "wall_s", "rtf", "timings"})


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@dataclass(frozen=True)
class PendingRequest:
    """The next request, by generic features (names as the synthesis events record them).

    Give resolved values where the engine resolves them (the device the model runs on, the
    sample rate actually produced): a None matches any recorded value, and a switch from or to
    None is not reported.

    Attributes:
        engine: Engine name.
        text_chars: Length of the text, in characters.
        device: ``cpu``, ``cuda``, ``cuda:N``; None: unknown.
        sample_rate: Output rate in Hz.
        use_kv_cache: Prompt-history cache switch (GLM-TTS; costs memory when on).
        voice: Voice name or id.
        reference_audio: Reference (prompt) recording id or path.
        extra: Further ``(name, value)`` features, for ``config_features`` of other engines.
    """

    engine: str
    text_chars: int
    device: str | None = None
    sample_rate: int | None = None
    use_kv_cache: bool = False
    voice: str | None = None
    reference_audio: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.text_chars, bool) or not isinstance(self.text_chars, int):
            raise ValueError(f"text_chars must be an int, not {self.text_chars!r}")
        if self.text_chars < 0:
            raise ValueError("text_chars must not be negative")

    def features(self) -> dict[str, Any]:
        """All features by name (``extra`` flattened in)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.pop("extra")
        data.update(self.extra)
        return data

    @classmethod
    def from_features(cls, features: Mapping[str, Any], **overrides: Any) -> PendingRequest:
        """Build one from a features dict (e.g. ``SynthesisRequest.features()`` plus ``engine``);
        ``overrides`` win. Unknown names go to ``extra``."""
        merged = {**features, **overrides}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in merged.items() if k in names}
        extra = tuple(sorted((k, v) for k, v in merged.items() if k not in names
                             and k not in _NOT_CONFIG and _hashable(v)))
        return cls(**known, extra=extra)


def lighter_request(pending: PendingRequest) -> PendingRequest | None:
    """The configuration to retry with after an out-of-memory error, or None if there is none.

    Turning GLM-TTS's prompt-history cache off shortens every segment's prompt, so it needs less
    memory; nothing else can be dropped without changing what is said.
    """
    if pending.use_kv_cache:
        return dataclasses.replace(pending, use_kv_cache=False)
    return None


# ----------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryEvent:
    """One recorded event, as the policy reads it (a light, frozen row).

    Attributes:
        kind: ``load``, ``synthesis``, ``cleanup``...
        ok: Whether it finished without an exception.
        oom: Whether it failed for lack of memory.
        duration_s: Wall time of the event (a load's is the reload cost).
        features: Recorded features (treat as read-only).
        torch_allocated, torch_reserved, torch_inactive_split, host_rss, nvml_process,
        nvml_device: Before/after/peak of each figure (see :class:`~monitoring.records.Change`).
        alloc_retries_before: torch ``num_alloc_retries`` at the start, when recorded.
        alloc_retries_after: Likewise at the end.
    """

    kind: str
    ok: bool = True
    oom: bool = False
    duration_s: float | None = None
    features: Mapping[str, Any] = field(default_factory=dict)
    torch_allocated: Change = _UNKNOWN
    torch_reserved: Change = _UNKNOWN
    torch_inactive_split: Change = _UNKNOWN
    host_rss: Change = _UNKNOWN
    nvml_process: Change = _UNKNOWN
    nvml_device: Change = _UNKNOWN
    alloc_retries_before: int | None = None
    alloc_retries_after: int | None = None

    @classmethod
    def from_record(cls, record: EventRecord) -> HistoryEvent:
        """The row of a tracked :class:`~monitoring.records.EventRecord`."""
        figures = record.breakdown.as_dict()
        return cls(
            kind=record.kind, ok=record.ok, oom=record.oom, duration_s=record.duration_s,
            features=dict(record.features),
            **{name: figures[name] for name in _FIGURES},
            alloc_retries_before=record.before.torch_num_alloc_retries,
            alloc_retries_after=record.after.torch_num_alloc_retries,
        )


def _int(value: Any) -> int | None:
    """An int from a store cell (None, NaN, float or int)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else int(number)


def _retries(detail: Any) -> tuple[int | None, int | None]:
    if not isinstance(detail, str) or not detail:
        return None, None
    data = json.loads(detail)
    return (_int(data.get("before", {}).get("torch_num_alloc_retries")),
            _int(data.get("after", {}).get("torch_num_alloc_retries")))


def _row_event(row: Mapping[str, Any]) -> HistoryEvent:
    features = row.get("features")
    if features is None:
        features = row.get("features_json") or {}
    if isinstance(features, str):
        features = json.loads(features)
    figures = {
        name: Change(_int(row.get(f"{name}_before_bytes")), _int(row.get(f"{name}_after_bytes")),
                     _int(row.get(f"{name}_peak_bytes")))
        for name in _FIGURES
    }
    duration = row.get("duration_s")
    duration = None if duration is None or math.isnan(float(duration)) else float(duration)
    before, after = _retries(row.get("detail_json"))
    return HistoryEvent(kind=str(row["kind"]), ok=bool(row.get("ok", True)),
                        oom=bool(row.get("oom", False)), duration_s=duration,
                        features=dict(features), **figures,
                        alloc_retries_before=before, alloc_retries_after=after)


def history_from_frame(frame: Any) -> list[HistoryEvent]:
    """Rows of ``Store.events()`` (a DataFrame, oldest first) as :class:`HistoryEvent` s.

    Also accepts a list of row dicts with the same column names. ``num_alloc_retries`` is read
    from ``detail_json`` when the frame was queried with ``detail=True``.
    """
    rows = frame.to_dict("records") if hasattr(frame, "to_dict") else list(frame)
    return [_row_event(row) for row in rows]


def history_from_records(records: Iterable[EventRecord]) -> list[HistoryEvent]:
    """Tracked records (oldest first) as :class:`HistoryEvent` s."""
    return [HistoryEvent.from_record(record) for record in records]


# ----------------------------------------------------------------------------- prediction


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


def _chars(event: HistoryEvent) -> int | None:
    value = event.features.get("text_chars")
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
    """(text_chars, demand) of earlier ok syntheses: same configuration, else same engine."""
    wanted = pending.features()
    same: list[tuple[int, int]] = []
    related: list[tuple[int, int]] = []
    baseline: int | None = None
    for event in history:
        if event.kind == "load" and event.ok:
            baseline = event.host_rss.after_bytes
            continue
        chars = _chars(event)
        if event.kind != "synthesis" or not event.ok or chars is None:
            continue
        if not _matches(event.features, wanted, ("engine", "device")):
            continue
        demand = _demand(event, domain, baseline, settings)
        if demand is None:
            continue
        related.append((chars, demand))
        if _matches(event.features, wanted, settings.config_features):
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


def _last_load(history: Sequence[HistoryEvent], engine: str | None) -> int | None:
    """Index of the newest ok load event (of ``engine`` when given)."""
    for i in range(len(history) - 1, -1, -1):
        event = history[i]
        if event.kind == "load" and event.ok and (
                engine is None or event.features.get("engine") in (None, engine)):
            return i
    return None


def _full_cleanup_after(history: Sequence[HistoryEvent], index: int) -> bool:
    return any(e.kind == "cleanup" and e.ok and e.features.get("level") == "full"
               for e in history[index + 1:])


def _is_loaded(history: Sequence[HistoryEvent], load: int | None) -> bool:
    """Whether the model is in memory: loaded (or used) and no full cleanup since."""
    start = load
    if start is None:
        start = next((i for i in range(len(history) - 1, -1, -1)
                      if history[i].kind == "synthesis" and history[i].ok), None)
    return start is not None and not _full_cleanup_after(history, start)


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
    peak = max(0.0, intercept + slope * pending.text_chars)
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


def _weights(history: Sequence[HistoryEvent], load: int | None) -> int | None:
    """Model bytes of the load at ``load``: its ``weights_bytes`` feature, else allocated growth."""
    if load is None:
        return None
    event = history[load]
    weights = event.features.get("weights_bytes")
    if isinstance(weights, int) and not isinstance(weights, bool):
        return weights
    retained = event.torch_allocated.retained_bytes
    return retained if retained is not None and retained > 0 else None


# ----------------------------------------------------------------------------- recommendation


@dataclass(frozen=True)
class Reason:
    """One rule's finding.

    Attributes:
        rule: Machine-readable id (one of :data:`RULES`).
        action: What this finding alone calls for (one of :data:`ACTIONS`).
        urgency: How strongly (one of :data:`URGENCIES`).
        text: One plain sentence with its numbers, for people.
    """

    rule: str
    action: str
    urgency: str
    text: str


@dataclass(frozen=True)
class Recommendation:
    """What to do before the next synthesis, and why.

    Attributes:
        action: ``none``, ``light`` or ``full``: the strongest action among the reasons of the
            highest urgency.
        urgency: ``info``, ``advised`` or ``required``: the highest among the reasons.
        reasons: Every finding, most urgent first.
        mode: The settings' mode (see :func:`should_act`).
        domain: ``gpu`` or ``cpu`` (None when the policy is off).
        prediction: The pending request's predicted demand, or None (no request or history).
        needed_bytes: Free memory the pending request will take (upper bound with margins, after
            what the process holds unused is reused), or None when not predictable.
        headroom_bytes: Free memory now (GPU: NVML device free; CPU: available RAM), or None.
        light_frees_bytes: What a light cleanup returns (GPU: releasable cache; None on CPU,
            where what glibc retains cannot be measured beforehand).
        full_frees_bytes: What a full cleanup returns: the model's weights plus the light part
            (on CPU: the weights; the trim's share is unknown). None when the weights are unknown.
        reload_cost_s: Median measured load time of the engine (what a full cleanup costs the next
            synthesis), or None when no load was recorded.
        lighter: A lighter configuration that fits when the request does not, or None.
    """

    action: str
    urgency: str
    reasons: tuple[Reason, ...]
    mode: str
    domain: str | None = None
    prediction: PeakPrediction | None = None
    needed_bytes: int | None = None
    headroom_bytes: int | None = None
    light_frees_bytes: int | None = None
    full_frees_bytes: int | None = None
    reload_cost_s: float | None = None
    lighter: PendingRequest | None = None

    @property
    def predicted_peak_bytes(self) -> int | None:
        """Predicted demand of the pending request (see :class:`PeakPrediction`)."""
        return None if self.prediction is None else self.prediction.peak_bytes

    @property
    def predicted_peak_upper_bytes(self) -> int | None:
        """Its conservative upper bound."""
        return None if self.prediction is None else self.prediction.peak_upper_bytes

    @property
    def rules(self) -> tuple[str, ...]:
        """The rule ids of the reasons, in order."""
        return tuple(reason.rule for reason in self.reasons)

    @property
    def should_act(self) -> bool:
        """Whether the caller runs :attr:`action` now (see :func:`should_act`)."""
        return should_act(self)

    @property
    def summary(self) -> str:
        """One line: the verdict and the first reason."""
        if self.action == "none":
            head = "no cleanup needed" if self.urgency == "info" else "no cleanup helps"
        elif self.urgency == "info":
            head = f"optional {self.action} cleanup"
        else:
            head = f"{self.action} cleanup {self.urgency}"
        return f"{head}: {self.reasons[0].text}" if self.reasons else head

    def to_features(self) -> dict[str, Any]:
        """JSON-ready figures, e.g. for ``store.log_event("recommendation", features=...)``."""
        return {
            "action": self.action, "urgency": self.urgency, "mode": self.mode,
            "domain": self.domain, "rules": list(self.rules),
            "reasons": [reason.text for reason in self.reasons],
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "predicted_peak_upper_bytes": self.predicted_peak_upper_bytes,
            "needed_bytes": self.needed_bytes, "headroom_bytes": self.headroom_bytes,
            "light_frees_bytes": self.light_frees_bytes,
            "full_frees_bytes": self.full_frees_bytes, "reload_cost_s": self.reload_cost_s,
        }


def should_act(rec: Recommendation, mode: str | None = None) -> bool:
    """Whether a caller in ``mode`` (default: the recommendation's) runs the action now.

    Only ``auto`` acts, and only on a ``required`` light or full cleanup.
    """
    mode = rec.mode if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return mode == "auto" and rec.urgency == "required" and rec.action != "none"


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
        return "torch allocated memory" if self.domain == "gpu" else "host RSS"

    def cost_text(self) -> str:
        cost = self.reload_cost
        return "an unmeasured reload" if cost is None else f"~{fmt_seconds(cost)} to reload"


def _headroom(snapshot: Snapshot, domain: str) -> tuple[int | None, int | None]:
    if domain == "cpu":
        return snapshot.system_available_bytes, snapshot.system_total_bytes
    free, total = snapshot.nvml_device_free_bytes, snapshot.nvml_device_total_bytes
    if free is None and total is not None and snapshot.nvml_device_used_bytes is not None:
        free = total - snapshot.nvml_device_used_bytes
    return free, total


def _light_frees(snapshot: Snapshot, domain: str) -> int | None:
    """GPU: what ``empty_cache()`` returns (measured, else reserved - live - fragmented)."""
    if domain == "cpu":
        return None
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
        wanted = ctx.pending.features()
        events = [e for e in events if _matches(e.features, wanted, ctx.settings.config_features)]
    return events


def _find_leak(ctx: _Context) -> _Leak | None:
    """Retained level rising across syntheses of one configuration (robust: median step).

    On CPU the step of a synthesis with a longer text than any before it since the load is left
    out: glibc's pool grows to each new high-water mark and keeps it, which is a cache, not a
    leak (a leak shows at every step, whatever the length).
    """
    settings = ctx.settings
    if not ctx.loaded:
        return None
    figure = "torch_allocated" if ctx.domain == "gpu" else "host_rss"
    events = _series(ctx, figure)
    steps: list[int] = []
    longest = _chars(events[0]) if events else None
    for prev, event in itertools.pairwise(events):
        chars = _chars(event)
        new_longest = (ctx.domain == "cpu" and chars is not None
                       and (longest is None or chars > longest))
        if chars is not None:
            longest = chars if longest is None else max(longest, chars)
        if not new_longest:
            steps.append(getattr(event, figure).after_bytes - getattr(prev, figure).after_bytes)
    steps = steps[-settings.leak_window:]
    if len(steps) < settings.leak_min_steps:
        return None
    slope = statistics.median(steps)
    recent = statistics.median(steps[len(steps) // 2:])
    rising = sum(step > 0 for step in steps) / len(steps)
    if (slope < settings.leak_slope_bytes or recent < settings.leak_slope_bytes / 2
            or rising < settings.leak_rising_fraction):
        return None
    last = getattr(events[-1], figure).after_bytes
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


# ----------------------------------------------------------------------------- rules


def _rule_switch(ctx: _Context) -> list[Reason]:
    """A feature changed since the last synthesis the model served whose change the engine
    declared to make its state stale (``switch_rules``)."""
    if ctx.pending is None or not ctx.loaded:
        return []
    last = next((e for e in reversed(ctx.since_load) if e.kind == "synthesis"), None)
    if last is None:
        return []
    wanted = ctx.pending.features()
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
        return [Reason("headroom.fits", "none", "info", f"{peak}; it {_takes(ctx, room)}.")]
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
    """What the request takes from free memory, as a clause ("takes ... so it fits")."""
    where = "on the GPU" if ctx.domain == "gpu" else "in RAM"
    if room.need_now > 0:
        return (f"takes {fmt_bytes(room.need_now)} of the {fmt_bytes(room.free_now)} free "
                f"{where}, so it fits")
    held = "memory this process already holds unused"
    if ctx.domain == "gpu" and ctx.reusable:
        held = f"the {fmt_bytes(ctx.reusable)} this process has cached"
    return f"fits in {held} ({fmt_bytes(room.free_now)} free {where} besides)"


def _peak_text(ctx: _Context, pred: PeakPrediction) -> str:
    assert ctx.pending is not None
    basis = f"{pred.samples} earlier synthes{'is' if pred.samples == 1 else 'es'}"
    if pred.scope == "engine":
        basis += " of other configurations"
    margin = f", widened {ctx.settings.thin_margin:.0%} for thin history" if pred.thin else ""
    return (f"predicted peak {fmt_bytes(pred.peak_bytes)} (up to "
            f"{fmt_bytes(pred.peak_upper_bytes)}) for {ctx.pending.text_chars} characters, "
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
    if ctx.pending.use_kv_cache:
        advice += " or turn the KV cache off"
    lighter = _lighter_fits(ctx)
    if lighter is not None:
        advice += f" (with it off the prediction is {fmt_bytes(lighter)}, which fits)"
    return f"{head}: {advice}."


def _lighter_fits(ctx: _Context) -> int | None:
    """Predicted demand of the lighter configuration when it fits now or after a full cleanup."""
    assert ctx.pending is not None
    lighter = lighter_request(ctx.pending)
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
        lighter = lighter_request(ctx.pending) if _lighter_fits(ctx) is not None else None
    return Recommendation(
        action=action, urgency=urgency, reasons=tuple(order), mode=ctx.settings.mode,
        domain=ctx.domain, prediction=ctx.prediction,
        needed_bytes=None if ctx.room is None else ctx.room.need_now,
        headroom_bytes=ctx.headroom, light_frees_bytes=ctx.light_frees,
        full_frees_bytes=_full_frees(ctx), reload_cost_s=ctx.reload_cost, lighter=lighter)


def recommend(snapshot: Snapshot, history: Sequence[HistoryEvent],
              pending: PendingRequest | None = None,
              settings: PolicySettings | None = None) -> Recommendation:
    """What to do before ``pending`` (or now, when None), and why. Pure and deterministic.

    Args:
        snapshot: Memory now (``take_snapshot()``; ``releasable=True`` makes the light figure
            exact on GPU).
        history: This session's events, oldest first (:func:`history_from_frame` of
            ``store.events(session_id=...)``, or :func:`history_from_records`).
        pending: The next request; None for an idle check (no headroom or switch rule).
        settings: Thresholds and mode; defaults when None.
    """
    settings = settings or PolicySettings()
    if settings.mode == "off":
        return Recommendation("none", "info", (Reason("policy.off", "none", "info",
                                                      "policy off"),), mode="off")
    ctx = _context(snapshot, history, pending, settings)
    reasons = [*_rule_switch(ctx), *_rule_restart(ctx), *_rule_headroom(ctx), *_rule_leak(ctx),
               *_rule_fragmentation(ctx), *_rule_cache(ctx)]
    return _combine(ctx, _rule_cost(ctx, reasons))
