"""The History page's table as a person reads it: human units, readable headers, times in the
browser's zone with the zone named, empty cells instead of "None" (pure: frames in, frame out)."""

from __future__ import annotations

import math

import pandas as pd

from monitoring.charts import wall_times, zone_name
from monitoring.i18n import N_, _
from monitoring.units import fmt_bytes, fmt_seconds

#: Stored column (or ``dtype``, from the features) -> (header, kind of value).
COLUMNS: dict[str, tuple[str, str]] = {
    "kind": (N_("Kind"), "kind"),
    "label": (N_("What"), "text"),
    "duration_s": (N_("Took"), "seconds"),
    "ok": (N_("OK"), "flag"),
    "error_type": (N_("Error"), "text"),
    "host_rss_change": (N_("Host RSS change"), "signed bytes"),
    "host_rss_peak_above": (N_("Host RSS peak above start"), "signed bytes"),
    "torch_reserved_after_bytes": (N_("torch reserved after"), "bytes"),
    "nvml_process_after_bytes": (N_("GPU used by the process after (NVML)"), "bytes"),
    "dtype": (N_("Precision"), "text"),
}
#: The event kinds as the table names them (:data:`monitoring.records.EVENT_KINDS`).
KIND_WORDS = {
    "synthesis": N_("synthesis"), "load": N_("load"), "cleanup": N_("cleanup"),
    "recommendation": N_("recommendation"), "error": N_("error"),
}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _cell(value: object, kind: str) -> str:
    if _blank(value):
        return ""
    if kind == "seconds":
        return fmt_seconds(float(value))
    if kind == "bytes":
        return fmt_bytes(float(value))
    if kind == "signed bytes":
        return fmt_bytes(float(value), signed=True)
    if kind == "flag":
        return _("yes") if bool(value) else _("no")
    if kind == "kind":
        return _(KIND_WORDS.get(str(value), str(value)))
    return str(value)


def time_header(tz: str | None) -> str:
    return _("Time ({zone})").format(zone=zone_name(tz))


def readable_events(events: pd.DataFrame, tz: str | None) -> pd.DataFrame:
    """``events`` (the store's rows) as the page shows them, newest first."""
    header = time_header(tz)
    columns = [header, *(_(h) for h, _kind in COLUMNS.values())]
    if not len(events):
        return pd.DataFrame(columns=columns)
    frame = events.copy()
    if "features" in frame:  # the weights' precision, for engines that have a choice
        frame["dtype"] = frame["features"].map(
            lambda f: f.get("dtype") if isinstance(f, dict) else None)
    for figure in ("host_rss",):
        before = frame.get(f"{figure}_before_bytes")
        if before is not None:
            frame[f"{figure}_change"] = frame.get(f"{figure}_after_bytes") - before
            frame[f"{figure}_peak_above"] = frame.get(f"{figure}_peak_bytes") - before
    out = pd.DataFrame({header: wall_times(frame["wall_s"], tz).dt.strftime(
        "%Y-%m-%d %H:%M:%S")})
    for column, (title, kind) in COLUMNS.items():
        values = frame[column] if column in frame else pd.Series([None] * len(frame),
                                                                 index=frame.index)
        out[_(title)] = [_cell(v, kind) for v in values]
    return out.iloc[::-1].reset_index(drop=True)


def export_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Every stored column, plus ``time_utc`` in ISO 8601 and ``features`` as JSON text."""
    import json

    rows = events.copy()
    rows.insert(0, "time_utc", wall_times(rows["wall_s"]).map(lambda t: t.isoformat()))
    if "features" in rows:
        rows["features"] = rows["features"].map(lambda f: json.dumps(f, default=str))
    return rows
