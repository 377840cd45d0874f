"""What the store writes: SQLite errors as typed errors, and an event record as a row."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from monitoring.errors import (
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreReadOnlyError,
)
from monitoring.records import EventRecord

MEMORY = ":memory:"


def _writable(path: str) -> bool:
    target = Path(path)
    folder_ok = os.access(target.parent, os.W_OK)
    return folder_ok and (not target.exists() or os.access(target, os.W_OK))


def translate(err: sqlite3.Error, path: str) -> StoreError:
    """Turn an SQLite error into the matching typed :class:`StoreError`."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    lowered = text.lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in lowered:
        return StoreLockedError(f"database is locked by another connection: {text}", path)
    if (
        name.startswith("SQLITE_READONLY")
        or "readonly" in lowered
        or (path != MEMORY and not _writable(path))
    ):
        message = f"database is not writable (read-only file, folder or file system): {text}"
        return StoreReadOnlyError(message, path)
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in lowered:
        return StoreCorruptError(f"file is not a valid SQLite database: {text}", path)
    return StoreError(f"SQLite error: {text}", path)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def event_row(record: EventRecord) -> dict[str, Any]:
    """The ``events`` columns for a record (figures flattened, details as JSON)."""
    row: dict[str, Any] = {
        "event_id": record.event_id,
        "session_id": record.session_id,
        "kind": record.kind,
        "label": record.label,
        "wall_s": record.started_wall_s,
        "duration_s": record.duration_s,
        "ok": int(record.ok),
        "oom": int(record.oom),
        "error_type": record.error_type,
        "error_message": record.error_message,
        "host_peak_source": record.peaks.host_rss_source,
        "features_json": _json(record.features),
    }
    for name, change in record.breakdown.as_dict().items():
        row[f"{name}_before_bytes"] = change.before_bytes
        row[f"{name}_after_bytes"] = change.after_bytes
        row[f"{name}_peak_bytes"] = change.peak_bytes
    row["detail_json"] = _json(
        {
            "before": record.before.to_dict(),
            "after": record.after.to_dict(),
            "peaks": dataclasses.asdict(record.peaks),
            "started_monotonic_s": record.started_monotonic_s,
        }
    )
    return row
