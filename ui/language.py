"""The UI language: the sidebar's choice, else the browser's language, else English.

Each script run (and each rerun of a fragment, which may run on a fresh thread) calls
:func:`apply` before it writes anything, so that every ``_()`` of the run speaks the language
chosen; the choice is a persisted widget like the form's (:mod:`ui.form_memory`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from monitoring import i18n
from ui.form_memory import KEEP

KEY = "ui_language"


def browser_language() -> str:
    """The language of the browser (``st.context.locale``, e.g. ``zh-CN``), English when it
    is unknown or not one the app speaks."""
    try:
        return i18n.normalize(st.context.locale)
    except Exception:  # noqa: BLE001 - no browser context (a bare script run): English
        return i18n.DEFAULT


def apply() -> str:
    """Speak the chosen language in this run; return it."""
    chosen = st.session_state.get(KEY)
    return i18n.set_language(chosen if chosen in i18n.LANGUAGES else browser_language())


def selector() -> None:
    """The sidebar's language picker, in both languages so that either reader finds it."""
    st.session_state.setdefault(KEY, i18n.language())
    st.selectbox("Language / 语言", list(i18n.LANGUAGES), key=KEY, **KEEP,
                 format_func=i18n.LANGUAGES.__getitem__)


def speaking_now(fn: Callable[[Any], str]) -> Callable[[Any], str]:
    """``fn`` (a widget's ``format_func``) speaking this run's language wherever it is called:
    Streamlit's AppTest calls it again from the test's own thread."""
    lang = i18n.language()

    def call(value: Any) -> str:
        with i18n.speaking(lang):
            return fn(value)

    return call
