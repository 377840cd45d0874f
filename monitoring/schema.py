"""SQLite schema of the event store, as forward migrations.

A migration's SQL never changes once released: a database at version N is brought to the current
version by running migrations N+1.. in order, in one transaction that also records each version
in ``schema_version``: a failed migration leaves the database as it was. A database newer than
this code is refused, never downgraded.

- v1: sessions, events (figures as columns, features as JSON), downsampled timeline samples.
- v2: the timeline also keeps torch fragmentation (``samples.torch_inactive_split_bytes``), and
  indexes serve the per-session queries of the pages (events by session and kind, samples by
  session and time).
- v3: events also keep the host heap (glibc malloc) of the process: bytes in live blocks and the
  resident free bytes a trim returns (``host_heap_in_use_*``, ``host_heap_releasable_*``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time

from monitoring.errors import StoreSchemaError

_V1 = """
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    started_wall_s REAL NOT NULL,
    label TEXT,
    pid INTEGER,
    hostname TEXT,
    meta_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    session_id TEXT,
    kind TEXT NOT NULL
        CHECK (kind IN ('load', 'synthesis', 'cleanup', 'recommendation', 'error')),
    label TEXT,
    wall_s REAL NOT NULL,
    duration_s REAL,
    ok INTEGER NOT NULL DEFAULT 1,
    oom INTEGER NOT NULL DEFAULT 0,
    error_type TEXT,
    error_message TEXT,
    torch_allocated_before_bytes INTEGER,
    torch_allocated_after_bytes INTEGER,
    torch_allocated_peak_bytes INTEGER,
    torch_reserved_before_bytes INTEGER,
    torch_reserved_after_bytes INTEGER,
    torch_reserved_peak_bytes INTEGER,
    torch_inactive_split_before_bytes INTEGER,
    torch_inactive_split_after_bytes INTEGER,
    torch_inactive_split_peak_bytes INTEGER,
    non_torch_gpu_before_bytes INTEGER,
    non_torch_gpu_after_bytes INTEGER,
    non_torch_gpu_peak_bytes INTEGER,
    nvml_process_before_bytes INTEGER,
    nvml_process_after_bytes INTEGER,
    nvml_process_peak_bytes INTEGER,
    nvml_device_before_bytes INTEGER,
    nvml_device_after_bytes INTEGER,
    nvml_device_peak_bytes INTEGER,
    host_rss_before_bytes INTEGER,
    host_rss_after_bytes INTEGER,
    host_rss_peak_bytes INTEGER,
    host_peak_source TEXT,
    features_json TEXT NOT NULL DEFAULT '{}',
    detail_json TEXT
);
CREATE INDEX events_by_kind ON events (kind, id);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT,
    wall_s REAL NOT NULL,
    monotonic_s REAL,
    host_rss_bytes INTEGER,
    system_available_bytes INTEGER,
    nvml_device_used_bytes INTEGER,
    nvml_device_free_bytes INTEGER,
    nvml_process_used_bytes INTEGER,
    torch_allocated_bytes INTEGER,
    torch_reserved_bytes INTEGER
)
"""

_V2 = """
ALTER TABLE samples ADD COLUMN torch_inactive_split_bytes INTEGER;
CREATE INDEX events_by_session ON events (session_id, kind, id);
CREATE INDEX samples_by_session ON samples (session_id, wall_s)
"""

_V3 = """
ALTER TABLE events ADD COLUMN host_heap_in_use_before_bytes INTEGER;
ALTER TABLE events ADD COLUMN host_heap_in_use_after_bytes INTEGER;
ALTER TABLE events ADD COLUMN host_heap_in_use_peak_bytes INTEGER;
ALTER TABLE events ADD COLUMN host_heap_releasable_before_bytes INTEGER;
ALTER TABLE events ADD COLUMN host_heap_releasable_after_bytes INTEGER;
ALTER TABLE events ADD COLUMN host_heap_releasable_peak_bytes INTEGER
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3}
"""Version -> SQL that brings the previous version to it."""

SCHEMA_VERSION = max(MIGRATIONS)
"""The version this code writes."""


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of the database; 0 for an empty one."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, applied_wall_s REAL NOT NULL)"
    )
    (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(version)


def migrate(conn: sqlite3.Connection, path: str, target: int = SCHEMA_VERSION) -> list[int]:
    """Bring the database to ``target``; returns the versions applied (oldest first).

    ``conn`` must be in autocommit mode (``isolation_level=None``). The check and every step run
    under one write lock (``BEGIN IMMEDIATE``), so two processes opening one file do not race, and
    a database that cannot be written is found here, at open time.

    Raises:
        StoreSchemaError: The database is newer than this code.
        sqlite3.Error: From SQLite (read-only, locked, corrupt...); the store translates it.
    """
    applied: list[int] = []
    with contextlib.suppress(sqlite3.OperationalError):  # no table yet: create it below
        if current_version(conn) == target:
            return applied  # nothing to write: no write lock (another process may hold it)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreSchemaError(
                f"schema version {version} is newer than this code ({SCHEMA_VERSION})", path
            )
        for step in range(version + 1, target + 1):
            for statement in MIGRATIONS[step].split(";"):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (step, time.time()))
            applied.append(step)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied
