"""Tuning sweep: measure memory and latency over a grid of settings, and rank the settings.

The grid is the KV-cache switch x the sample rate x the text length, and for engines whose
constructor takes them, the dtype and the attention-cache switch (the twin). Axes an engine
does not honour collapse to one value (Piper has no KV switch: only "off" is run; its sample
rate is honoured by resampling, so it stays). Every point is one real synthesis through a
:class:`~glmtts.session.SynthesisSession`, so each is a tracked event in the store.

Per point the sweep reports, from one memory figure chosen by
:func:`monitoring.records.peak_figure` (torch's reserved pool on a GPU, host RSS on the CPU):

- ``peak_bytes``: what the configuration needs, weights included: the memory in use at the
  group's first point above the figure's value *before the model was loaded*, plus this
  synthesis's own peak above its start (so what earlier points left behind, a grown heap,
  does not bias later ones);
- ``peak_delta_bytes``: its peak above the synthesis's own start (headroom needed with the
  model already loaded);
- ``retained_bytes``: what it left behind (after - before);
- ``predicted_peak_bytes``: the engine's analytic estimate of ``peak_bytes`` where it has one
  (an ``estimate_peak_bytes(request)`` method, as the twin does).

No Streamlit here: the Tune page and ``python -m glmtts sweep`` are thin layers over this.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from glmtts.errors import GlmTtsError, OutOfMemoryError
from glmtts.say import N_, Listing, Say
from monitoring.records import peak_figure

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from glmtts.request import SynthesisRequest
    from monitoring import EventRecord, Sampler, Store

log = logging.getLogger(__name__)

GIB = 2**30
MIB = 2**20
#: Texts of growing length (one, two and five segments of 30-60 characters).
DEFAULT_TEXTS = (
    "Hello there, how are you doing today?",
    "The quick brown fox jumps over the lazy dog, while the old man watches from his porch "
    "and smiles at the morning sun.",
    "In the early years of the century, the small town by the river became a busy centre of "
    "trade. Merchants came every week with cloth, salt and iron tools, and the market square "
    "filled with voices from dawn until dusk. The old stone bridge carried carts and cattle "
    "across the water.",
)
#: The Tune page's default texts without a GPU: one segment and two (the KV switch changes
#: only a second segment's prompt): its default sweep ends within a minute on a 2-core CPU.
CPU_TEXTS = (
    DEFAULT_TEXTS[0],
    "The quick brown fox jumps over the lazy dog, while the old man watches from his porch.",
)
#: What the warm-up synthesis after each model load says.
WARMUP_TEXT = "Warm-up run of the tuning sweep."
#: Engine constructor options the sweep can vary, in the order of the grid.
ENGINE_AXES = ("dtype", "attention_cache")
#: Columns that identify a configuration (a point minus its text).
CONFIG_COLUMNS = ("engine", "scale", "dtype", "attention_cache", "sample_rate", "use_kv_cache")

Progress = Callable[[int, int, "SweepPoint | None"], None]


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep.

    Attributes:
        engine: Engine name.
        texts: Texts to speak (their lengths are the x axis).
        sample_rates: Output rates to try.
        kv: Values of the request's ``use_kv_cache`` (upstream's prompt-history switch).
        dtypes: Engine ``dtype`` values (engines that take one: the twin).
        attention_cache: Engine ``attention_cache`` values (the LLM's own KV cache: the twin).
        scale: Engine ``scale`` option (the twin); None: the engine's default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Seed of every request (the same tokens for the same text and settings).
        clean_between: Run a light cleanup (gc, ``empty_cache``, ``malloc_trim``) before each
            point, so that memory cached by the previous point does not hide this one's peak.
        budget_bytes: Points whose predicted peak exceeds this are skipped, not run; None runs
            everything.
        warmup: Run one short, tracked but unreported synthesis per output rate after each
            model load.
    """

    engine: str = "twin"
    texts: tuple[str, ...] = DEFAULT_TEXTS
    sample_rates: tuple[int, ...] = (24000, 32000)
    kv: tuple[bool, ...] = (False, True)
    dtypes: tuple[str, ...] = ("fp32",)
    attention_cache: tuple[bool, ...] = (True,)
    scale: float | None = None
    device: str = "auto"
    seed: int = 42
    clean_between: bool = True
    budget_bytes: int | None = None
    warmup: bool = True


@dataclass(frozen=True)
class SweepPoint:
    """One synthesis of the grid.

    Attributes:
        options: Engine constructor options (sorted ``(name, value)`` pairs).
        sample_rate: Requested rate, None for the engine's native one.
        use_kv_cache: The request's prompt-history switch.
        text: What to speak.
    """

    options: tuple[tuple[str, Any], ...]
    sample_rate: int | None
    use_kv_cache: bool
    text: str

    def request(self, seed: int) -> SynthesisRequest:
        from glmtts.request import SynthesisRequest

        return SynthesisRequest(text=self.text, sample_rate=self.sample_rate,
                                use_kv_cache=self.use_kv_cache, seed=seed)


@dataclass
class SweepResult:
    """Rows (one per point) and what the grid collapsed or skipped, in words."""

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _constructor_options(engine_cls: type) -> set[str]:
    return set(inspect.signature(engine_cls.__init__).parameters)


def plan_sweep(spec: SweepSpec) -> tuple[list[SweepPoint], list[str]]:
    """The distinct points ``spec`` gives for its engine, and notes on what collapsed.

    Raises:
        GlmTtsError: the engine cannot run here, or the grid is empty.
    """
    from glmtts.engines import create_engine, engine_class

    cls = engine_class(spec.engine)
    reason = cls.unavailable_reason()
    if reason is not None:
        raise GlmTtsError(Say("the {engine} engine cannot run here: {reason}",
                              engine=spec.engine, reason=reason))
    accepted = _constructor_options(cls)
    notes: list[str] = []
    base: dict[str, Any] = {}
    if spec.scale is not None:
        if "scale" in accepted:
            base["scale"] = spec.scale
        else:
            notes.append(Say("{engine} has no scale option: --scale ignored",
                             engine=spec.engine))
    axes: list[list[tuple[str, Any]]] = []
    for name, values in (("dtype", spec.dtypes), ("attention_cache", spec.attention_cache)):
        if name in accepted:
            axes.append([(name, v) for v in dict.fromkeys(values)])
        elif len(set(values)) > 1 or (name == "dtype" and set(values) != {"fp32"}):
            notes.append(Say("{engine} has no {option} option: that axis collapses",
                             engine=spec.engine, option=name))
    caps = create_engine(spec.engine, **base).capabilities
    if not caps.speech:
        notes.append(Say("{engine}'s audio is not speech (random weights): its memory and "
                         "timings are what count", engine=spec.engine))
    rates: list[int | None]
    if caps.reason("sample_rate") is None:
        rates = [r for r in dict.fromkeys(spec.sample_rates) if r in caps.sample_rates]
        dropped = sorted(set(spec.sample_rates) - set(rates))
        if dropped:
            notes.append(Say("{engine} cannot produce {rates} Hz: left out",
                             engine=spec.engine, rates=", ".join(map(str, dropped))))
    else:
        rates = [None]
        notes.append(Say("{engine} ignores the sample rate: {reason}", engine=spec.engine,
                         reason=caps.reason("sample_rate")))
    kv = list(dict.fromkeys(spec.kv))
    if caps.reason("use_kv_cache") is not None and kv != [False]:
        kv = [False]
        notes.append(Say("{engine}: KV cache only 'off' ({reason})", engine=spec.engine,
                         reason=caps.reason("use_kv_cache")))
    texts = list(dict.fromkeys(t for t in spec.texts if t.strip()))
    points = [SweepPoint(tuple(sorted({**base, **dict(combo)}.items())), rate, use_kv, text)
              for combo in itertools.product(*axes)
              for rate in rates for use_kv in kv for text in texts]
    if not points:
        raise GlmTtsError(N_("the sweep grid is empty: give at least one text, sample rate "
                             "and KV setting"))
    return points, notes


def _minus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


def _footprint(outcome: Any, load: EventRecord | None) -> int | None:
    """Memory in use when ``outcome``'s synthesis started, above the start of ``load``."""
    figure = peak_figure(outcome.record)
    start = getattr(load.breakdown, figure).before_bytes if load is not None else None
    return _minus(getattr(outcome.record.breakdown, figure).before_bytes, start)


def _row(name: str, engine: Any, point: SweepPoint, outcome: Any, footprint: int | None,
         predicted: int | None) -> dict[str, Any]:
    options = dict(point.options)
    row: dict[str, Any] = {
        "engine": name, "scale": getattr(engine, "scale", None),
        "dtype": options.get("dtype"), "attention_cache": options.get("attention_cache"),
        "sample_rate": point.sample_rate, "use_kv_cache": point.use_kv_cache,
        "text_chars": len(point.text), "text": point.text,
        "predicted_peak_bytes": predicted, "model_bytes": engine.model_bytes(), "status": "ok",
    }
    if outcome is None:
        return row
    record = outcome.record
    result = outcome.result
    figure = peak_figure(record)
    change = getattr(record.breakdown, figure)
    peak = (None if footprint is None or change.peak_delta_bytes is None
            else footprint + change.peak_delta_bytes)
    row.update(
        sample_rate=result.sample_rate, device=record.features.get("device"), figure=figure,
        peak_bytes=peak, peak_delta_bytes=change.peak_delta_bytes,
        retained_bytes=change.retained_bytes, latency_s=record.duration_s,
        audio_s=result.duration_s, rtf=result.rtf,
        segments=result.metadata.get("sentences"), event_id=record.event_id)
    return row


def _estimate(engine: Any, request: SynthesisRequest) -> int | None:
    estimate = getattr(engine, "estimate_peak_bytes", None)
    return int(estimate(request)) if callable(estimate) else None


def run_sweep(spec: SweepSpec, *, store: Store | None = None, sampler: Sampler | None = None,
              progress: Progress | None = None) -> SweepResult:
    """Run every point of ``spec``; one row per point.

    Points run grouped by engine options: per group a light cleanup, one model load and (with
    ``spec.warmup``) one short warm-up synthesis per output rate, so that one-time library
    state (kernel caches, workspaces) is not charged to the first point's retained memory; a
    full cleanup after the group. A point that runs out of memory is recorded (``status``
    ``oom``) and the sweep goes on; one whose predicted peak exceeds ``spec.budget_bytes`` is
    not run (``status`` ``skipped``).

    Args:
        store: Event store for the tracked events; None: a private in-memory store.
        sampler: Running sampler (NVML peaks and timeline markers), or None.
        progress: Called as ``progress(done, total, point)`` before each point and once at
            the end with ``point=None``.

    Raises:
        GlmTtsError: the engine cannot run here, the grid is empty, or a request is invalid.
    """
    import pandas as pd

    from monitoring import Store

    points, notes = plan_sweep(spec)
    store = store if store is not None else Store(":memory:")
    rows: list[dict[str, Any]] = []
    for options, group in itertools.groupby(points, key=lambda p: p.options):
        rows.extend(_run_group(spec, dict(options), list(group), store, sampler, progress,
                               done=len(rows), total=len(points)))
    if progress is not None:
        progress(len(points), len(points), None)
    return SweepResult(pd.DataFrame(rows), notes)


def _run_group(spec: SweepSpec, options: dict[str, Any], points: list[SweepPoint],
               store: Store, sampler: Sampler | None, progress: Progress | None, *,
               done: int, total: int) -> list[dict[str, Any]]:
    """The points sharing one engine configuration (one model load)."""
    from glmtts.request import SynthesisRequest
    from glmtts.session import SynthesisSession

    label = f"sweep {spec.engine} " + " ".join(f"{k}={v}" for k, v in options.items())
    session = SynthesisSession(spec.engine, engine_options=options, device=spec.device,
                               store=store, sampler=sampler, label=label.strip())
    rows: list[dict[str, Any]] = []
    load: EventRecord | None = None
    footprint: int | None = None  # weights, load and warm-up state, at the first point
    try:
        requests = [p.request(spec.seed) for p in points]
        predicted = [_estimate(session.engine, r) for r in requests]
        runnable = [spec.budget_bytes is None or p is None or p <= spec.budget_bytes
                    for p in predicted]
        if any(runnable):
            if spec.clean_between:
                session.cleanup("light")
            for rate in dict.fromkeys(p.sample_rate for p in points) if spec.warmup else ():
                try:  # one per output rate: each has its own vocoder
                    warm = SynthesisRequest(text=WARMUP_TEXT, sample_rate=rate, seed=spec.seed)
                    load = session.synthesize(warm, recover=False).load or load
                except OutOfMemoryError as exc:
                    log.warning("sweep warm-up ran out of memory: %s", exc)
        for i, (point, request) in enumerate(zip(points, requests, strict=True)):
            if progress is not None:
                progress(done + i, total, point)
            base = _row(spec.engine, session.engine, point, None, None, predicted[i])
            if not runnable[i]:
                rows.append({**base, "status": "skipped"})
                continue
            if spec.clean_between and session.loaded:
                session.cleanup("light")
            try:
                outcome = session.synthesize(request, recover=False)
            except OutOfMemoryError as exc:
                rows.append({**base, "status": "oom", "error": str(exc)})
                continue
            if outcome.load is not None:  # loaded by this point (no warm-up): counts from it
                load, footprint = outcome.load, None
            if footprint is None:
                footprint = _footprint(outcome, load)
            rows.append(_row(spec.engine, session.engine, point, outcome, footprint,
                             predicted[i]))
    finally:
        if session.loaded:
            session.cleanup("full")
        session.close()
    return rows


def config_label(row: pd.Series | dict[str, Any], columns: Sequence[str]) -> str:
    """Short name of a configuration from the ``columns`` that vary, e.g.
    ``"24 kHz · KV on · fp32"``."""
    parts: list[str] = []
    for col in columns:
        value = row[col]
        if col == "sample_rate":
            parts.append(Say("{rate} kHz", rate=f"{int(value) / 1000:g}") if _known(value)
                         else N_("native rate"))
        elif col == "use_kv_cache":
            parts.append(N_("KV on") if value else N_("KV off"))
        elif col == "attention_cache":
            parts.append(N_("attention cache on") if value else N_("attention cache off"))
        elif col == "scale":
            parts.append(Say("scale {scale}", scale=f"{value:g}"))
        else:
            parts.append(str(value))
    return Say("{parts}", parts=Listing(parts, " · ")) if parts else str(row["engine"])


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _varying(frame: pd.DataFrame) -> list[str]:
    return [c for c in CONFIG_COLUMNS
            if c in frame and c != "engine" and frame[c].nunique(dropna=False) > 1]


def rank_configurations(frame: pd.DataFrame, budget_bytes: int | None = None) -> pd.DataFrame:
    """One row per configuration (the texts folded), best first: by the memory it needs (the
    largest measured ``peak_bytes`` over its texts, else the largest prediction), then by its
    mean latency. ``fits`` says whether that need is within ``budget_bytes`` (True when no
    budget is given)."""
    import pandas as pd

    if frame.empty:
        return pd.DataFrame(columns=["configuration", "need_bytes", "fits"])
    keys = [c for c in CONFIG_COLUMNS if c in frame]
    data = frame.copy()
    for col in ("peak_bytes", "predicted_peak_bytes", "latency_s"):
        if col not in data:
            data[col] = float("nan")
    grouped = data.groupby(keys, dropna=False, sort=False).agg(
        measured_bytes=("peak_bytes", "max"), predicted_bytes=("predicted_peak_bytes", "max"),
        latency_s=("latency_s", "mean"), points=("text_chars", "size")).reset_index()
    grouped["need_bytes"] = grouped["measured_bytes"].fillna(grouped["predicted_bytes"])
    grouped["need_source"] = grouped["measured_bytes"].notna().map(
        {True: "measured", False: "predicted"})
    grouped.loc[grouped["need_bytes"].isna(), "need_source"] = None
    grouped["fits"] = (True if budget_bytes is None
                       else grouped["need_bytes"].le(budget_bytes))
    varying = _varying(frame)
    grouped.insert(0, "configuration", [config_label(r, varying) for _, r in grouped.iterrows()])
    return grouped.sort_values(["need_bytes", "latency_s"], na_position="last",
                               kind="stable").reset_index(drop=True)


def fitting_configurations(frame: pd.DataFrame, budget_bytes: int) -> pd.DataFrame:
    """The configurations whose need is within ``budget_bytes``, best first."""
    ranked = rank_configurations(frame, budget_bytes)
    return ranked[ranked["fits"]].reset_index(drop=True)


def sweep_figures(frame: pd.DataFrame) -> dict[str, go.Figure]:
    """The Tune page's charts of a sweep (see :mod:`glmtts.sweep_figures`)."""
    from glmtts.sweep_figures import sweep_figures as figures

    return figures(frame)
