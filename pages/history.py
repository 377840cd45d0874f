import json

import pandas as pd
import streamlit as st

from monitoring.records import EVENT_KINDS
from ui import frame
from ui.form_memory import KEEP
from ui.state import app_resources, tts_session

#: Rows shown in the table; the CSV export has every matching row (built when downloaded).
SHOWN = 1000

frame.begin()
st.title("🗂️ History")
res = app_resources()
session = tts_session()
if res.store.fallback_reason:
    st.warning(f"Events are kept in memory only: {res.store.fallback_reason}")

st.session_state.setdefault("history_kinds", list(EVENT_KINDS))
st.session_state.setdefault("history_scope", "this browser session")
c1, c2 = st.columns([3, 2])
kinds = c1.multiselect("Kinds", EVENT_KINDS, key="history_kinds", **KEEP)
scope = c2.radio("Sessions", ["this browser session", "all sessions"], key="history_scope", **KEEP,
                 horizontal=True)
session_id = session.session_id if scope == "this browser session" else None
if not kinds:
    st.info("No kind of event is selected: choose at least one to see events.")
events = res.store.events(kind=kinds, session_id=session_id, last=SHOWN) if kinds else (
    pd.DataFrame())
columns = ["wall_s", "kind", "label", "duration_s", "ok", "oom", "error_type",
           "host_rss_before_bytes", "host_rss_after_bytes", "host_rss_peak_bytes",
           "torch_reserved_after_bytes", "nvml_process_after_bytes", "session_id", "event_id"]
table = events[[c for c in columns if c in events]].copy()
if len(table):
    table.insert(0, "time", pd.to_datetime(table.pop("wall_s"), unit="s"))
st.dataframe(table.iloc[::-1], hide_index=True, width="stretch", key="history_table")
st.caption(f"{len(events):,} event(s) shown (newest first; at most {SHOWN:,}).")


def _every_matching_row() -> bytes:
    """All matching events, not only the rows shown (built when the button is pressed)."""
    if not kinds:
        return b""
    rows = res.store.events(kind=kinds, session_id=session_id)
    rows.insert(0, "time_utc", pd.to_datetime(rows["wall_s"], unit="s", utc=True).map(
        lambda t: t.isoformat()))
    rows["features"] = rows["features"].map(lambda f: json.dumps(f, default=str))
    return rows.to_csv(index=False).encode()


st.download_button("Download CSV (every matching event)", _every_matching_row, "events.csv",
                   "text/csv", key="history_csv", disabled=not kinds)

frame.end()
