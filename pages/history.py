import pandas as pd
import streamlit as st

from monitoring.charts import zone_name
from monitoring.i18n import N_, _, ngettext
from monitoring.records import EVENT_KINDS
from ui import frame
from ui.form_memory import KEEP
from ui.history_table import KIND_WORDS, export_frame, readable_events
from ui.language import speaking_now
from ui.state import app_resources, tts_session
from ui.timezone import browser_zone

#: Rows shown in the table; the CSV export has every matching row (built when downloaded).
SHOWN = 1000

frame.begin()
st.title(_("🗂️ History"))
res = app_resources()
session = tts_session()
if res.store.fallback_reason:
    st.warning(_("Events are kept in memory only: {reason}").format(
        reason=res.store.fallback_reason))

st.session_state.setdefault("history_kinds", list(EVENT_KINDS))
st.session_state.setdefault("history_scope", "this browser session")
c1, c2 = st.columns([3, 2])
kinds = c1.multiselect(_("Kinds"), EVENT_KINDS, key="history_kinds", **KEEP,
                       format_func=speaking_now(lambda k: _(KIND_WORDS.get(k, k))))
SCOPES = (N_("this browser session"), N_("all sessions"))
scope = c2.radio(_("Sessions"), SCOPES, key="history_scope", **KEEP, horizontal=True,
                 format_func=speaking_now(lambda s: _(s)))
session_id = session.session_id if scope == "this browser session" else None
if not kinds:
    st.info(_("No kind of event is selected: choose at least one to see events."))
events = res.store.events(kind=kinds, session_id=session_id, last=SHOWN) if kinds else (
    pd.DataFrame())
st.dataframe(readable_events(events, browser_zone()), hide_index=True, width="stretch",
             key="history_table")
zone = zone_name(browser_zone())
where = (_("{zone}, your browser's zone").format(zone=zone) if zone != "UTC"
         else _("UTC (no zone from the browser)"))
st.caption(ngettext("{count} event(s) shown (newest first; at most {limit}); times in {where}.",
                    "{count} event(s) shown (newest first; at most {limit}); times in {where}.",
                    len(events)).format(count=f"{len(events):,}", limit=f"{SHOWN:,}",
                                        where=where))


def _every_matching_row() -> bytes:
    """All matching events, not only the rows shown (built when the button is pressed)."""
    if not kinds:
        return b""
    rows = export_frame(res.store.events(kind=kinds, session_id=session_id))
    return rows.to_csv(index=False).encode()


st.download_button(_("Download CSV (every matching event)"), _every_matching_row, "events.csv",
                   "text/csv", key="history_csv", disabled=not kinds)

frame.end()
