"""Plotly figures from monitoring data (DataFrames in, figures out; no Streamlit).

Every figure draws at most a bounded number of points: long series are reduced per bucket to
their maximum (memory peaks stay visible), while the stored data keeps every row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from monitoring.i18n import _
from monitoring.sampler import Marker
from monitoring.snapshot import Snapshot

MIB = 1024 * 1024

#: Timeline series: column -> (legend name, where the figure comes from).
SERIES: dict[str, str] = {
    "nvml_device_used_bytes": "GPU used, device-wide (NVML)",
    "nvml_process_used_bytes": "GPU used by this process (NVML)",
    "torch_reserved_bytes": "torch reserved (allocator pool)",
    "torch_allocated_bytes": "torch allocated (live tensors)",
    "host_rss_bytes": "host RSS (this process)",
}
MARKER_COLOURS = {"synthesis": "#2a9d8f", "load": "#e9c46a", "cleanup": "#e76f51",
                  "error": "#d62828", "recommendation": "#8d99ae"}


def zone_name(tz: str | None) -> str:
    """``tz`` if it names a time zone this machine knows (IANA, e.g. ``Europe/Berlin``), else
    ``UTC``: the zone that :func:`wall_times` uses and that titles name."""
    if not tz:
        return "UTC"
    try:
        pd.Timestamp(0, tz=tz)
    except Exception:  # noqa: BLE001 - an unknown name from a browser
        return "UTC"
    return tz


def wall_times(wall_s: pd.Series, tz: str | None = None) -> pd.Series:
    """Epoch seconds as times in the zone ``tz`` (None or unknown: UTC). Every page and chart
    shows time this one way, with the zone named (:func:`zone_name`)."""
    return pd.to_datetime(wall_s, unit="s", utc=True).dt.tz_convert(zone_name(tz))


def samples_frame(samples: Iterable[Snapshot]) -> pd.DataFrame:
    """Sampler snapshots as a frame: ``time`` (datetime) and the :data:`SERIES` columns."""
    rows = [{"wall_s": s.wall_s, **{c: getattr(s, c) for c in SERIES}} for s in samples]
    frame = pd.DataFrame(rows, columns=["wall_s", *SERIES])
    frame["time"] = wall_times(frame["wall_s"])
    return frame


def stitch_stored(buffered: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """The live buffer, preceded by the store's persisted timeline where the buffer does not
    reach back (after a restart of the process, or for a span longer than the ring buffer).

    Args:
        buffered: :func:`samples_frame` of the sampler's ring buffer.
        stored: ``Store.timeline()`` rows (one per persisted bucket: each figure's maximum).
    """
    if stored is None or not len(stored):
        return buffered
    first = float(buffered["wall_s"].iloc[0]) if len(buffered) else float("inf")
    older = stored[stored["wall_s"] < first]
    if not len(older):
        return buffered
    older = older.reindex(columns=["wall_s", *SERIES]).sort_values("wall_s")
    older["time"] = wall_times(older["wall_s"])
    if not len(buffered):
        return older.reset_index(drop=True)
    return pd.concat([older, buffered], ignore_index=True)


def markers_frame(markers: Iterable[Marker]) -> pd.DataFrame:
    """Sampler markers as a frame: ``time``, ``kind``, ``phase``, ``label``, ``event_id``."""
    rows = [{"wall_s": m.wall_s, "kind": m.kind, "phase": m.phase, "label": m.label,
             "event_id": m.event_id} for m in markers]
    frame = pd.DataFrame(rows, columns=["wall_s", "kind", "phase", "label", "event_id"])
    frame["time"] = wall_times(frame["wall_s"])
    return frame


def downsample_max(frame: pd.DataFrame, columns: Sequence[str], max_points: int) -> pd.DataFrame:
    """At most ``max_points`` rows: consecutive rows grouped, each group's max per column (its
    first row for the other columns)."""
    if len(frame) <= max_points:
        return frame
    group = pd.Series(range(len(frame)), index=frame.index) * max_points // len(frame)
    first = frame.groupby(group.to_numpy()).first()
    peaks = frame[list(columns)].groupby(group.to_numpy()).max()
    first[list(columns)] = peaks
    return first.reset_index(drop=True)


def _present(frame: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c in frame and frame[c].notna().any()]


#: Series of a watched child process (an engine worker), drawn dashed beside this process's.
CHILD_SERIES: dict[str, str] = {
    "nvml_process_used_bytes": "GPU used by the {name} (NVML)",
    "torch_reserved_bytes": "torch reserved in the {name}",
    "torch_allocated_bytes": "torch allocated in the {name}",
    "host_rss_bytes": "host RSS of the {name}",
}


def timeline_figure(samples: pd.DataFrame, markers: pd.DataFrame | None = None,
                    max_points: int = 1500, child: pd.DataFrame | None = None,
                    child_name: str = "worker", tz: str | None = None) -> go.Figure:
    """Memory over time, one line per available figure, events as labelled markers.

    Args:
        samples: Frame with ``time`` and any of the :data:`SERIES` columns (bytes).
        markers: Frame from :func:`markers_frame`; only ``end``/``instant`` markers are drawn.
        max_points: Upper bound of points per line.
        child: Samples of another process whose memory belongs on the same chart (a worker
            that holds the model), drawn dashed as :data:`CHILD_SERIES`.
        child_name: How the legend names that process (e.g. ``worker pid 1234``).
        tz: Time zone of the time axis (the browser's; None: UTC), named in its title.
    """
    fig = go.Figure()
    samples = _in_zone(samples, tz)
    markers = _in_zone(markers, tz)
    child = _in_zone(child, tz)
    present = _present(samples, SERIES)
    drawn = downsample_max(samples, present, max_points)
    for col in present:
        fig.add_trace(go.Scatter(x=drawn["time"], y=drawn[col] / MIB, mode="lines",
                                 name=SERIES[col], meta={"column": col}))
    tops = [float(samples[c].max()) for c in present]
    if child is not None and len(child):
        child_present = _present(child, CHILD_SERIES)
        child_drawn = downsample_max(child, child_present, max_points)
        for col in child_present:
            fig.add_trace(go.Scatter(
                x=child_drawn["time"], y=child_drawn[col] / MIB, mode="lines",
                line={"dash": "dash"}, name=CHILD_SERIES[col].format(name=child_name),
                meta={"column": col, "process": child_name}))
            tops.append(float(child[col].max()))
    top = max(tops, default=0.0) / MIB
    if markers is not None and len(markers):
        shown = markers[markers["phase"].isin(["end", "instant"])].sort_values("time")
        rows_y = _stacked(shown, top)
        for kind, rows in shown.groupby("kind", sort=False):
            fig.add_trace(go.Scatter(
                x=rows["time"], y=rows_y.loc[rows.index], mode="markers+text",
                name=_("{kind} ({count}, every session of this process)").format(
                    kind=kind, count=len(rows)),
                text=[str(kind)[0].upper()] * len(rows),
                textposition="top center", hovertext=rows["label"].fillna(str(kind)),
                marker={"symbol": "triangle-down", "size": 11,
                        "color": MARKER_COLOURS.get(str(kind), "#555")},
                meta={"markers": str(kind), "event_ids": rows["event_id"].tolist()}))
    fig.update_layout(yaxis_title="MiB", xaxis_title=f"time ({zone_name(tz)})", height=380,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.3},
                      uirevision="timeline")
    return fig


def _stacked(markers: pd.DataFrame, top: float) -> pd.Series:
    """Heights of the markers above the lines: one that falls within 1/80 of the time span of
    the one before is drawn a step higher, so markers that overlap stay readable."""
    heights = pd.Series(top * 1.04, index=markers.index, dtype=float)
    if len(markers) < 2:
        return heights
    times = markers["time"].astype("int64")
    close = max(1, (int(times.max()) - int(times.min())) // 80)
    level, previous = 0, None
    for index, at in zip(markers.index, times, strict=True):
        level = level + 1 if previous is not None and at - previous < close else 0
        heights[index] = top * (1.04 + 0.07 * min(level, 5))
        previous = at
    return heights


def _in_zone(frame: pd.DataFrame | None, tz: str | None) -> pd.DataFrame | None:
    if frame is None or "wall_s" not in frame or not len(frame):
        return frame
    frame = frame.copy()
    # plotly draws a zone-aware time in UTC: hand it the local wall-clock time, zone named
    frame["time"] = wall_times(frame["wall_s"], tz).dt.tz_localize(None)
    return frame


def growth_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Per synthesis, in order: retained (after - before) and peak (peak - before) per figure."""
    syn = events[events["kind"] == "synthesis"].reset_index(drop=True)
    out = pd.DataFrame({"n": range(1, len(syn) + 1), "label": syn.get("label")})
    for fig_name in ("nvml_process", "torch_reserved", "torch_allocated", "host_rss"):
        before, after, peak = (syn.get(f"{fig_name}_{p}_bytes") for p in ("before", "after",
                                                                          "peak"))
        if before is None or after is None:
            continue
        out[f"{fig_name}_retained_bytes"] = after - before
        out[f"{fig_name}_after_bytes"] = after
        if peak is not None:
            out[f"{fig_name}_peak_delta_bytes"] = peak - before
    for fig_name in ("host_heap_in_use", "host_heap_releasable"):  # levels after, no before
        after = syn.get(f"{fig_name}_after_bytes")
        if after is not None and after.notna().any():
            out[f"{fig_name}_after_bytes"] = after
    return out


def primary_figure(frame: pd.DataFrame) -> str:
    """The figure that best shows growth: NVML this process on GPU, else host RSS."""
    for name in ("nvml_process", "torch_reserved", "host_rss"):
        col = f"{name}_after_bytes"
        if col in frame and frame[col].notna().any():
            return name
    return "host_rss"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` ticks covering ``[lo, hi]`` at a step of 1, 2 or 5 times a power of ten
    (400, 420, 440, ... rather than 430.3, 451.1, ...)."""
    import math

    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    return [round(first + i * step, 9) for i in range(math.ceil((hi - first) / step) + 1)]


def growth_figure(events: pd.DataFrame, max_points: int = 600) -> go.Figure:
    """The growth curve: level after each synthesis, with retained and peak deltas as bars."""
    frame = growth_frame(events)
    name = primary_figure(frame)
    fig = go.Figure()
    if len(frame):
        cols = [c for c in (f"{name}_after_bytes", f"{name}_retained_bytes",
                            f"{name}_peak_delta_bytes") if c in frame]
        drawn = downsample_max(frame, cols, max_points)
        level = {"nvml_process": _("GPU used by this process after each (NVML)"),
                 "torch_reserved": _("torch reserved after each"),
                 "host_rss": _("host RSS after each: the whole process (every session)")}
        fig.add_trace(go.Bar(x=drawn["n"], y=drawn.get(f"{name}_peak_delta_bytes",
                                                       pd.Series(dtype=float)) / MIB,
                             name=_("peak above its start (MiB)"), marker_color="#f4a261"))
        fig.add_trace(go.Bar(x=drawn["n"], y=drawn[f"{name}_retained_bytes"] / MIB,
                             name=_("retained after it (MiB)"), marker_color="#264653"))
        fig.add_trace(go.Scatter(x=drawn["n"], y=drawn[f"{name}_after_bytes"] / MIB,
                                 name=level.get(name, name), mode="lines+markers",
                                 line={"color": "#2a9d8f"}, yaxis="y2"))
        if name == "host_rss":  # on a CPU: RSS split into live malloc blocks and free memory
            _heap_lines(fig, frame, max_points)
        levels = pd.Series([v for t in fig.data if t.yaxis == "y2" and t.y is not None
                            for v in t.y],
                           dtype=float).dropna()
        ticks = nice_ticks(float(levels.min()), float(levels.max())) if len(levels) else []
        fine = len(ticks) > 1 and ticks[1] - ticks[0] < 1
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right",
                                  "title": _("level, MiB"), "tickformat": ",.1f" if fine
                                  else ",.0f",
                                  "tickmode": "array", "tickvals": ticks,
                                  "range": [ticks[0], ticks[-1]] if ticks else None})
    fig.update_layout(barmode="group", xaxis_title=_("synthesis # in this browser session"),
                      yaxis_title=_("change, MiB"), yaxis={"tickformat": ",.0f"},
                      height=340, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.2}, meta={"figure": name})
    return fig


def _heap_lines(fig: go.Figure, frame: pd.DataFrame, max_points: int) -> None:
    """The C heap's levels after each synthesis (where recorded), on the level axis."""
    lines = {"host_heap_in_use_after_bytes": (_("C heap in use after each (live malloc "
                                                "blocks)"), "#e76f51", "solid"),
             "host_heap_releasable_after_bytes": (_("held free by the C allocator after each "
                                                    "(a light cleanup returns it)"),
                                                  "#8ab17d", "dot")}
    cols = [c for c in lines if c in frame]
    if not cols:
        return
    drawn = downsample_max(frame, cols, max_points)
    for col in cols:
        label, color, dash = lines[col]
        fig.add_trace(go.Scatter(x=drawn["n"], y=drawn[col] / MIB, name=label, mode="lines",
                                 line={"color": color, "dash": dash}, yaxis="y2"))


def breakdown_rows(event: pd.Series | dict[str, Any]) -> pd.DataFrame:
    """Where one event's memory went: retained and transient bytes per part."""
    get = event.get

    def delta(a: str, b: str) -> float | None:
        x, y = get(a), get(b)
        return None if x is None or y is None or pd.isna(x) or pd.isna(y) else float(x) - float(y)

    alloc_ret = delta("torch_allocated_after_bytes", "torch_allocated_before_bytes")
    res_ret = delta("torch_reserved_after_bytes", "torch_reserved_before_bytes")
    cache_ret = None if alloc_ret is None or res_ret is None else res_ret - alloc_ret
    rows = [
        ("torch live tensors", alloc_ret,
         delta("torch_allocated_peak_bytes", "torch_allocated_after_bytes")),
        ("torch allocator cache", cache_ret,
         delta("torch_reserved_peak_bytes", "torch_reserved_after_bytes")),
        ("non-PyTorch GPU (context, libraries)",
         delta("non_torch_gpu_after_bytes", "non_torch_gpu_before_bytes"), None),
        ("host RSS", delta("host_rss_after_bytes", "host_rss_before_bytes"),
         delta("host_rss_peak_bytes", "host_rss_after_bytes")),
        # read before an event only for cleanups (the heap read walks malloc's free blocks)
        ("C heap in use (live malloc blocks)",
         delta("host_heap_in_use_after_bytes", "host_heap_in_use_before_bytes"), None),
        ("C heap held free (a trim returns it)",
         delta("host_heap_releasable_after_bytes", "host_heap_releasable_before_bytes"), None),
    ]
    return pd.DataFrame(rows, columns=["part", "retained_bytes", "transient_bytes"]).dropna(
        subset=["retained_bytes", "transient_bytes"], how="all")


def breakdown_figure(event: pd.Series | dict[str, Any]) -> go.Figure:
    """Stacked bars: per part, what stayed after the event and what was only transient."""
    rows = breakdown_rows(event)
    fig = go.Figure()
    fig.add_trace(go.Bar(y=rows["part"], x=rows["retained_bytes"] / MIB, orientation="h",
                         name="retained after (MiB)"))
    fig.add_trace(go.Bar(y=rows["part"], x=rows["transient_bytes"].fillna(0) / MIB,
                         orientation="h", name="transient, peak - after (MiB)"))
    fig.update_layout(barmode="relative", height=260, margin={"l": 10, "r": 10, "t": 30,
                                                               "b": 10},
                      legend={"orientation": "h", "y": -0.25}, xaxis_title="MiB")
    return fig
