"""What the user typed and chose survives everything: page switches, cleanups, reruns, a page
left before it finished loading, and a reload of the browser tab.

Two parts, one mechanism:

- within a Streamlit session, every persisted widget is drawn with :data:`KEEP`
  (``persist_state="session"``, Streamlit's documented way to keep a widget's value while
  another page is shown), and each run starts by writing the kept values back through the
  Session State API (see :func:`restore` for why);
- a reload starts a new Streamlit session, so at the end of every run the persisted values are
  saved in this process under a random token that the page's URL carries (``?form=...``); a
  new session whose URL holds a known token starts from those values, then takes a token of its
  own (a tab duplicated with its URL copies the form, and the two go separate ways).

The saved forms live in this server process only (at most :data:`MAX_FORMS`, least recently
used dropped); a server restart forgets them, as it forgets the sessions.
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections import OrderedDict
from typing import Any

import streamlit as st

#: Drawing options of every persisted widget.
KEEP: dict[str, str] = {"persist_state": "session"}
#: Widget keys whose values are saved for a reload.
PERSISTED = ("engine", "glmtts_home", "use_phoneme", "dtype", "isolate_piper", "isolate_glm-tts",
             "isolate_twin", "python_piper", "python_glm-tts", "python_twin", "text",
             "voice_path", "sample_rate", "use_kv_cache", "seed", "fixed_seed",
             "sampling_method", "speed", "ref_text", "cleanup_level", "policy_mode", "live",
             "history_kinds", "history_scope", "batch_source", "batch_path", "tune_engine",
             "tune_device", "tune_budget", "tune_scale", "tune_dtypes", "tune_attention",
             "tune_rates", "tune_kv", "tune_texts", "ui_language", "idle_tiers")
PARAM = "form"
MAX_FORMS = 1000
_TOKEN_KEY = "_form_token"

_forms: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


def restore() -> None:
    """First thing in every run: a new session whose URL names a saved form starts from its
    values; the URL carries this session's token from then on."""
    state = st.session_state
    if _TOKEN_KEY not in state:
        given = st.query_params.get(PARAM)
        with _lock:
            saved = copy.deepcopy(_forms.get(given)) if given else None
        for key, value in (saved or {}).items():
            if key not in state:
                state[key] = value
        state[_TOKEN_KEY] = secrets.token_urlsafe(12)
    # A widget drawn on every page (the sidebar's) is another widget on each page; Streamlit
    # hands its kept value to the new one only when that value differs from the element's
    # default, otherwise the browser draws the default and sends it back. Writing each kept
    # value back through the Session State API makes Streamlit send it on every page.
    for key in PERSISTED:
        if key in state:
            state[key] = state[key]
    if st.query_params.get(PARAM) != state[_TOKEN_KEY]:
        st.query_params[PARAM] = state[_TOKEN_KEY]


def save() -> None:
    """Last thing in every run: remember the persisted values under this session's token."""
    state = st.session_state
    token = state.get(_TOKEN_KEY)
    if token is None:
        return
    values = {key: copy.deepcopy(state[key]) for key in PERSISTED if key in state}
    with _lock:
        _forms[token] = values
        _forms.move_to_end(token)
        while len(_forms) > MAX_FORMS:
            _forms.popitem(last=False)
