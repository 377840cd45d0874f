"""The browser's time zone, for every time the pages show (UTC, and said so, when unknown)."""

from __future__ import annotations

import streamlit as st


def browser_zone() -> str | None:
    """The IANA zone the browser reports (``Europe/Berlin``), or None (shown as UTC)."""
    try:
        return st.context.timezone or None
    except Exception:  # noqa: BLE001 - no browser context (a bare script run): UTC
        return None
