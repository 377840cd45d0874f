import time

import pandas as pd
import streamlit as st

from monitoring import charts
from monitoring.allocator_history import MemoryHistory, snapshot_filename
from monitoring.allocator_history import unavailable_reason as snapshot_unavailable
from monitoring.i18n import N_, _, say
from ui import frame, language
from ui.form_memory import KEEP
from ui.format import fmt_bytes
from ui.language import speaking_now
from ui.sidebar import current_snapshot
from ui.state import app_resources, tts_session
from ui.timezone import browser_zone

#: Latest syntheses drawn in the growth curve (downsampled to at most 600 points); the store
#: keeps every event, and the History page exports them all.
GROWTH_EVENTS = 2000

frame.begin()
st.title(_("📈 Monitor"))
res = app_resources()
session = tts_session()
snap = current_snapshot()
if snap.gpu_index is None:
    st.info(_("No GPU data: {reason}. The charts show host memory (RSS) instead.").format(
        reason=say(snap.nvml_reason) or _("NVML is not available")))

st.session_state.setdefault("live", True)
c1, c2 = st.columns([1, 3])
c1.toggle(_("Live"), key="live", **KEEP, help=_("Redraw the timeline every second; off to pause"))
SPANS = {"2 min": N_("2 min"), "5 min": N_("5 min"), "1 hour": N_("1 hour"),
         "all buffered": N_("all buffered")}
scope = c2.radio(_("Timeline span"), list(SPANS),
                 format_func=speaking_now(lambda s: _(SPANS[s])),
                 horizontal=True, key="timeline_span", index=1,
                 help=_("The live buffer holds the last 5 minutes at 10 Hz; older minutes (and "
                        "those from before a restart of the app) come from the store, one point "
                        "per second (each figure's maximum)"))


def _stored_timeline(since: float) -> pd.DataFrame:
    """The app's persisted timeline since ``since`` (this and earlier app processes)."""
    stored = res.store.timeline(since_wall_s=since)
    sessions = res.store.sessions()
    apps = set(sessions.loc[sessions["label"] == "app", "session_id"]) if len(sessions) else set()
    return stored[stored["session_id"].isin(apps)] if len(stored) else stored


@st.fragment(run_every=1.0 if st.session_state["live"] else None)
def timeline() -> None:
    language.apply()  # a fragment's rerun may run on a fresh thread
    seconds = {"2 min": 120, "5 min": 300, "1 hour": 3600}.get(scope)
    samples = res.sampler.samples()
    frame = charts.samples_frame(samples)
    if seconds is not None:
        since = time.time() - seconds
        if not len(frame) or frame["wall_s"].iloc[0] > since + 1:
            frame = charts.stitch_stored(frame, _stored_timeline(since))
    markers = charts.markers_frame(res.sampler.markers())
    worker = session.worker_sampler  # the engine worker that holds this session's model
    child = None
    if worker is not None:
        child = charts.samples_frame(worker.samples())
        markers = pd.concat([markers, charts.markers_frame(worker.markers())],
                            ignore_index=True).sort_values("wall_s")
    if seconds is not None and len(frame):
        start = frame["wall_s"].iloc[-1] - seconds
        frame = frame[frame["wall_s"] >= start]
        markers = markers[markers["wall_s"] >= start]
        if child is not None:
            child = child[child["wall_s"] >= start]
    pid = session.engine.pid if session.isolated else None  # type: ignore[attr-defined]
    name = (_("engine worker (pid {pid})").format(pid=pid) if pid
            else _("engine worker (not running)"))
    st.plotly_chart(charts.timeline_figure(frame, markers, child=child, child_name=name,
                                           tz=browser_zone()),
                    key="timeline_chart", width="stretch")
    st.caption(_("{count} samples buffered at 10 Hz · markers: S synthesis, L load, C "
                 "cleanup").format(count=f"{len(samples):,}")
               + (_(" · dashed: the engine worker process that holds this session's model")
                  if child is not None else ""))


timeline()

def _growth() -> tuple[object | None, object | None, str | None]:
    """The growth curve and the latest breakdown, rebuilt only when this session recorded a
    synthesis since they were drawn (a plain rerun asks the store one index lookup)."""
    newest = res.store.latest_event_id(session_id=session.session_id, kind="synthesis")
    cached = st.session_state.get("_growth_figures")
    if cached is not None and cached[0] == (session.session_id, newest):
        return cached[1]
    syn = res.store.events(kind="synthesis", session_id=session.session_id,
                           last=GROWTH_EVENTS)
    figures = ((charts.growth_figure(syn), charts.breakdown_figure(syn.iloc[-1]),
                str(syn.iloc[-1]["label"])) if len(syn) else (None, None, None))
    st.session_state["_growth_figures"] = ((session.session_id, newest), figures)
    return figures


growth, breakdown, latest_label = _growth()
left, right = st.columns(2)
with left:
    st.subheader(_("Growth per synthesis"))
    if growth is not None:
        st.plotly_chart(growth, key="growth_chart", width="stretch")
        st.caption(_("Bars: retained after each synthesis and its peak above the start; "
                     "line: the level after it. A level that keeps rising is a leak; one that "
                     "levels off is the allocator's cache."))
    else:
        st.caption(_("No synthesis yet in this session."))
with right:
    st.subheader(_("Latest synthesis, by part"))
    if breakdown is not None:
        st.plotly_chart(breakdown, key="breakdown_chart", width="stretch")
        st.caption(f"“{latest_label}”")
    else:
        st.caption(_("No synthesis yet in this session."))

st.subheader(_("PyTorch memory snapshot"))
why_not = snapshot_unavailable()
if why_not:
    st.caption(_("For pytorch.org/memory_viz: {reason}.").format(reason=say(why_not)))
else:
    if st.button(_("Take a snapshot of the CUDA allocator"), key="take_snapshot"):
        st.session_state["_memory_snapshot"] = (snapshot_filename(),
                                                MemoryHistory().snapshot_bytes())
    if "_memory_snapshot" in st.session_state:
        name, data = st.session_state["_memory_snapshot"]
        st.download_button(_("Download {name} (drop it on pytorch.org/memory_viz)").format(
                               name=name), data,
                           file_name=name, mime="application/octet-stream",
                           key="memory_snapshot")

st.subheader(_("GPUs (NVML)"))
if snap.gpus:
    st.dataframe(pd.DataFrame([{
        "GPU": g.index, _("name"): g.name, _("used"): fmt_bytes(g.used_bytes),
        _("total"): fmt_bytes(g.total_bytes), _("this process"): fmt_bytes(g.process_used_bytes),
        _("note"): g.process_reason or "",
    } for g in snap.gpus]), hide_index=True, width="stretch")
else:
    st.caption(_("No NVIDIA GPU visible: {reason}.").format(
        reason=say(snap.nvml_reason) or _("NVML unavailable")))

frame.end()
