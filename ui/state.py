"""Where the app keeps things: one store and sampler per process, one synthesis session (and so
one model) per browser session, as the product brief asks."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import streamlit as st

from glmtts.idle import IdleReleaser
from glmtts.paths import event_store_path
from glmtts.session import SynthesisSession
from monitoring import Sampler, Store, open_store
from ui import metrics_port


@dataclass(frozen=True)
class AppResources:
    """Process-wide: the event store, the live sampler, the app's own store session and the
    idle releaser (its thread starts when a browser session first turns idle tiers on)."""

    store: Store
    sampler: Sampler
    app_session_id: str
    idle: IdleReleaser


@st.cache_resource(show_spinner=False)
def app_resources() -> AppResources:
    """Open the store (in memory, with the reason, if the file cannot be used) and start the
    10 Hz sampler; once per process, shared by every browser session."""
    from ui.metrics_port import start_metrics_port

    start_metrics_port()  # only when GLMTTS_METRICS_PORT is set
    store = open_store(event_store_path())
    app_session = store.start_session("app", pid=os.getpid())
    sampler = Sampler(store=store, session_id=app_session).start()
    return AppResources(store, sampler, app_session, IdleReleaser(name="app-idle-release"))


def _release(session: SynthesisSession) -> None:
    """When the browser session ends (the tab closed, or its connection stayed lost for
    ``server.disconnectedSessionTTL`` seconds): drop its model and end its engine worker, so
    that the sidebar's count of models and the GPU forget it (its idle tiers, weakly held by
    the releaser, go with it)."""
    session.close()


@st.cache_resource(scope="session", on_release=_release, show_spinner=False)
def _release_with_the_browser_session(key: str, _session: SynthesisSession) -> SynthesisSession:
    """Ties ``_session`` to the browser session (Streamlit releases session-scoped resources
    when it ends); ``key`` tells sessions apart."""
    return _session


def tts_session() -> SynthesisSession:
    """This browser session's synthesis session (created on first use, model not loaded;
    closed when the browser session ends)."""
    session = st.session_state.get("_tts_session")
    if session is None:
        res = app_resources()
        port = metrics_port.running()  # the side port counts what every session does
        session = SynthesisSession(store=res.store, sampler=res.sampler,
                                   label=f"browser {uuid.uuid4().hex[:6]}",
                                   sinks=[port.metrics.observe] if port else [])
        st.session_state["_tts_session"] = session
    _release_with_the_browser_session(f"{session.label} {id(session):x}", session)
    return session
