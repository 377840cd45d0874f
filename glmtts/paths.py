"""Where the app keeps its files, resolved in one place."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the event store (a SQLite path, or ``:memory:``).
DB_ENV = "GLMTTS_DB"
ROOT = Path(__file__).resolve().parent.parent


def event_store_path(explicit: str | None = None) -> str:
    """The event store: ``explicit`` if given, else ``$GLMTTS_DB``, else the git-ignored
    ``data/memory.sqlite3`` in the project folder. Every front end (app, service, batch,
    sweep) resolves it here, once, and hands it to :func:`monitoring.open_store`."""
    if explicit:
        return explicit
    configured = os.environ.get(DB_ENV, "").strip()
    return configured or str(ROOT / "data" / "memory.sqlite3")
