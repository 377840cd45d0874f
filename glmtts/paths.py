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


#: Environment variable naming the folder of voices registered over HTTP (``/v1/voices``).
VOICES_ENV = "GLMTTS_VOICES"


def voices_folder(event_store: str | None = None) -> Path:
    """Where registered voices (reference clip and transcript) are kept: ``$GLMTTS_VOICES``,
    else a ``voices`` folder beside the event store file (the data folder by default), else
    (an in-memory store) ``data/voices`` in the project folder."""
    configured = os.environ.get(VOICES_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    store = event_store_path(event_store)
    if store != ":memory:" and not store.startswith("file:"):
        return Path(store).expanduser().resolve().parent / "voices"
    return ROOT / "data" / "voices"
