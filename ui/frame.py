"""The frame every page shares: call :func:`begin` first and :func:`end` last."""

from __future__ import annotations

from ui import form_memory, language
from ui.sidebar import render_sidebar


def begin() -> None:
    """A reloaded tab gets back what it had typed and chosen (:mod:`ui.form_memory`); the run
    speaks the chosen language (:mod:`ui.language`)."""
    form_memory.restore()
    language.apply()


def end() -> None:
    """The sidebar, drawn after the page so it shows what the page's action just did."""
    render_sidebar()
    form_memory.save()
