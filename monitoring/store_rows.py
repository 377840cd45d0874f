"""What the store writes: SQLite errors as typed errors, an event record as a row, and the
checks on a file before it is written to (ours? writable?)."""

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
    StoreSchemaError,
)
from monitoring.records import EventRecord

MEMORY = ":memory:"


def _writable(path: str) -> bool:
    target = Path(path)
    folder_ok = os.access(target.parent, os.W_OK)
    return folder_ok and (not target.exists() or os.access(target, os.W_OK))


def check_ours(path: str) -> None:
    """Before anything is written (WAL mode, tables): an existing file must be empty or this
    app's store. Someone else's SQLite file is refused, read-only, unchanged.

    Raises:
        StoreSchemaError: another program's database.
        StoreError: the file cannot be read (translated SQLite error).
    """
    if path == MEMORY or not Path(path).is_file() or Path(path).stat().st_size == 0:
        return
    try:
        probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error as err:
        raise translate(err, path) from err
    try:
        tables = {row[0] for row in probe.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise translate(err, path) from err
    finally:
        probe.close()
    tables = {t for t in tables if not t.startswith("sqlite_")}
    if tables and "schema_version" not in tables:
        foreign = ", ".join(sorted(tables)[:5])
        raise StoreSchemaError(
            f"{path} is another program's SQLite database (tables: {foreign}), not this app's "
            f"event store; it was left unchanged: point GLMTTS_DB at another file", path)


def check_writable(conn: sqlite3.Connection, path: str, busy_timeout_s: float) -> None:
    """Prove that ``conn`` can write (a header write, rolled back) so that a read-only file
    is found when the store opens, not at the first event. A lock held by another connection
    proves nothing either way and is left to the write-behind queue.

    Raises:
        StoreReadOnlyError: the file, its folder or the file system is read-only.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.Error as err:
        error = translate(err, path)
        if not isinstance(error, StoreLockedError):
            raise error from err
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")


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
