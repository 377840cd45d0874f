"""The frame every page shares: call :func:`begin` first and :func:`end` last."""

from __future__ import annotations

from ui.sidebar import render_sidebar
from ui.state import persist_widgets


def begin() -> None:
    """Keep widget values across page switches."""
    persist_widgets()


def end() -> None:
    """The sidebar, drawn after the page so it shows what the page's action just did."""
    render_sidebar()
