"""The Tune page's charts of a sweep (:func:`glmtts.sweep.run_sweep`'s rows), in the UI's
language: built for the page only, so their words go through the catalog here (the CLI prints
tables, not charts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glmtts.sweep import MIB, _varying, config_label
from monitoring.i18n import N_, _, say

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

#: key -> (column, title, axis unit, divisor)
SPECS = {
    "peak": ("peak_bytes", N_("Peak (MiB above the start before loading)"), "MiB", MIB),
    "retained": ("retained_bytes", N_("Retained after the synthesis (MiB)"), "MiB", MIB),
    "latency": ("latency_s", N_("Latency (s)"), "s", 1),
}
#: What the memory figure of the rows measures, in words.
FIGURE_WORDS = {"host_rss": N_("host RSS (the whole process)"),
                "torch_reserved": N_("torch reserved"),
                "nvml_process": N_("GPU memory of the process (NVML)")}


def sweep_figures(frame: pd.DataFrame) -> dict[str, go.Figure]:
    """Plotly figures against text length, one line per configuration: ``"peak"`` (peak above
    the pre-load start, with the prediction dotted where there is one), ``"retained"`` and
    ``"latency"``. Lines that coincide are drawn once and named together, so that the legend
    lists only what can be seen."""
    import plotly.graph_objects as go

    figures: dict[str, go.Figure] = {}
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    varying = _varying(frame)
    for key, (column, title, unit, divisor) in SPECS.items():
        fig = go.Figure()
        lines: dict[tuple, list[str]] = {}
        if column in ok:
            for _key, group in ok.groupby(varying or ["engine"], dropna=False, sort=False):
                group = group.sort_values("text_chars")
                name = say(config_label(group.iloc[0], varying))
                values = group[column] / divisor
                shape = (column, tuple(group["text_chars"]), tuple(values.round(1)))
                if shape in lines:
                    lines[shape].append(name)
                    continue
                lines[shape] = [name]
                fig.add_trace(go.Scatter(x=group["text_chars"], y=values,
                                         mode="lines+markers", name=name,
                                         meta={"column": column, "shape": len(lines) - 1}))
                if key == "peak" and group["predicted_peak_bytes"].notna().any():
                    fig.add_trace(go.Scatter(
                        x=group["text_chars"], y=group["predicted_peak_bytes"] / divisor,
                        mode="lines", line={"dash": "dot"},
                        name=_("{name} (predicted)").format(name=name),
                        meta={"column": "predicted_peak_bytes"}))
        named = list(lines.values())
        for trace in fig.data:
            index = (trace.meta or {}).get("shape")
            if index is not None and len(named[index]) > 1:
                trace.name = _("{names} (the same)").format(names=" = ".join(named[index]))
        measured = ok["figure"].dropna() if "figure" in ok else ok.iloc[:0, :0]
        heading = _(title)
        if len(measured):
            figure = measured.iloc[0]
            heading = _("{title}, measured as {figure}").format(
                title=heading, figure=_(FIGURE_WORDS[figure]) if figure in FIGURE_WORDS
                else figure.replace("_", " "))
        fig.update_layout(title=heading, xaxis_title=_("text length (characters)"),
                          yaxis_title=unit, height=360,
                          margin={"l": 10, "r": 10, "t": 40, "b": 10},
                          legend={"orientation": "h", "y": -0.25}, meta={"sweep": key})
        figures[key] = fig
    return figures
