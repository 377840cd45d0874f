"""Durable event log: SQLite in WAL mode, every event committed as it happens.

A process that crashes (even ``kill -9``) loses nothing already committed: WAL with
``synchronous=NORMAL`` makes each commit survive the application's death (a power loss may drop the
last commits but never corrupts the file; pass ``synchronous="FULL"`` to also survive that).

Location: the path the caller gives (a file, or ``:memory:``), else ``data/memory.sqlite3`` at the
project root. :func:`open_store` falls back to an in-memory store, saying why, when the file is
read-only, locked or corrupt, so that the app keeps running.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from monitoring import schema
from monitoring.backlog import WriteBehind
from monitoring.errors import (
    StoreError,
    StoreLockedError,
    StoreReadOnlyError,
)
from monitoring.records import EVENT_KINDS, EventRecord
from monitoring.store_rows import (
    MEMORY,
    _json,
    check_ours,
    check_writable,
    event_row,
    translate,
)

if TYPE_CHECKING:
    from types import TracebackType

    import pandas as pd

    from monitoring.snapshot import Snapshot

_log = logging.getLogger(__name__)

SAMPLE_FIELDS = (
    "host_rss_bytes",
    "system_available_bytes",
    "nvml_device_used_bytes",
    "nvml_device_free_bytes",
    "nvml_process_used_bytes",
    "torch_allocated_bytes",
    "torch_reserved_bytes",
    "torch_inactive_split_bytes",
)
_TABLES = ("events", "samples", "sessions")


def default_db_path() -> str:
    """``data/memory.sqlite3`` beside this package (a git-ignored folder): where a caller that
    names no file keeps its events. The app resolves its own path (``glmtts.paths``) and passes
    it in; this package reads no environment."""
    return str(Path(__file__).resolve().parent.parent / "data" / "memory.sqlite3")


class Store:
    """The SQLite event store. Thread-safe: one connection, used under a lock.

    Args:
        path: Database file, or ``":memory:"``; None: :func:`default_db_path`.
        busy_timeout_s: How long a write waits for another connection's lock before
            :class:`StoreLockedError`.
        synchronous: SQLite ``synchronous`` setting: ``"NORMAL"`` (survives a process crash) or
            ``"FULL"`` (also a power loss, at one fsync per commit).

    Raises:
        StoreReadOnlyError, StoreLockedError, StoreCorruptError, StoreSchemaError, StoreError:
            The database cannot be opened for writing (see :func:`open_store` for a fallback).

    Attributes:
        path: The database path.
        fallback_reason: Why this in-memory store replaces the configured one, or None.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout_s: float = 2.0,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = str(path) if path is not None else default_db_path()
        self.fallback_reason: str | None = None
        self._lock = threading.RLock()
        self._conn = self._connect(busy_timeout_s, synchronous)
        # Events that waited for another connection's lock, oldest first (see submit()).
        self._backlog = WriteBehind(self._write_item, StoreLockedError, name=self.path)

    # opening -----------------------------------------------------------------------------------

    def _connect(self, busy_timeout_s: float, synchronous: str) -> sqlite3.Connection:
        if self.path != MEMORY:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                message = f"cannot create the store's folder: {err}"
                raise StoreReadOnlyError(message, self.path) from err
        check_ours(self.path)
        try:
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as err:
            raise translate(err, self.path) from err
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            applied = schema.migrate(conn, self.path)
            if self.path != MEMORY:
                check_writable(conn, self.path, busy_timeout_s)
        except sqlite3.Error as err:
            conn.close()
            raise translate(err, self.path) from err
        except StoreError:
            conn.close()
            raise
        if applied:
            _log.info("store %s: schema migrated through versions %s", self.path, applied)
        return conn

    @property
    def schema_version(self) -> int:
        """The database's schema version."""
        with self._lock:
            return schema.current_version(self._conn)

    @property
    def in_memory(self) -> bool:
        """True when nothing is written to disk."""
        return self.path == MEMORY

    def close(self, flush_timeout_s: float = 10.0) -> None:
        """Write what :meth:`submit` still holds (waiting at most ``flush_timeout_s`` for a
        lock to go), then close the connection (idempotent). Events that could not be written
        are counted in :attr:`events_lost` and logged."""
        left = self._backlog.close(flush_timeout_s)
        if left:
            _log.warning("store %s closed with %d event(s) unwritten: another connection "
                         "held its lock", self.path, left)
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # writing -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction, SQLite errors translated."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise translate(err, self.path) from err

    def _insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        with self._transaction() as conn:
            conn.executemany(sql, [tuple(row[c] for c in columns) for row in rows])

    def start_session(self, label: str | None = None, **meta: Any) -> str:
        """Record a new session (one app process, or one browser session); returns its id."""
        session_id = uuid.uuid4().hex
        row = {
            "session_id": session_id,
            "started_wall_s": time.time(),
            "label": label,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "meta_json": _json(meta),
        }
        # through the backlog: a store locked when a run starts delays the row, loses nothing
        self._backlog.submit(("sessions", row))
        return session_id

    def _write_item(self, item: EventRecord | tuple[str, dict[str, Any]]) -> None:
        if isinstance(item, tuple):
            self._insert(item[0], [item[1]])
        else:
            self.add_event(item)

    def add_event(self, record: EventRecord) -> None:
        """Insert and commit one tracked event.

        Raises:
            StoreLockedError: another connection held the write lock past the busy timeout.
            StoreError: any other failure.
        """
        self._insert("events", [event_row(record)])

    # write-behind ------------------------------------------------------------------------------

    def submit(self, record: EventRecord) -> None:
        """Store a tracked event and lose none: written now when the database is free; when
        another connection holds its lock (``SQLITE_BUSY`` past the busy timeout), the event
        joins an ordered backlog that a background thread writes as soon as the lock goes.
        While a backlog exists, new events join it at once, so work being measured waits at
        most one busy timeout per lock episode. :meth:`close` flushes the backlog.

        Raises:
            StoreError: a failure other than a lock (read-only file, closed store...).
        """
        self._backlog.submit(record)

    @property
    def pending_writes(self) -> int:
        """Events waiting in the backlog for a lock to go."""
        return self._backlog.pending

    @property
    def events_lost(self) -> int:
        """Events given up (the backlog overflowed, or the store closed before the lock went)."""
        return self._backlog.lost

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the backlog is written (at most ``timeout_s``); whether it is empty."""
        return self._backlog.flush(timeout_s)

    def log_event(
        self,
        kind: str,
        *,
        label: str | None = None,
        session_id: str | None = None,
        features: dict[str, Any] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        oom: bool = False,
    ) -> str:
        """Insert and commit an event without measurements (a recommendation, an error...).

        Returns:
            The new event's id.

        Raises:
            ValueError: ``kind`` is not one of :data:`~monitoring.records.EVENT_KINDS`.
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
        event_id = uuid.uuid4().hex
        row = {
            "event_id": event_id,
            "session_id": session_id,
            "kind": kind,
            "label": label,
            "wall_s": time.time(),
            "ok": int(error_type is None),
            "oom": int(oom),
            "error_type": error_type,
            "error_message": error_message,
            "features_json": _json(features or {}),
        }
        self._insert("events", [row])
        return event_id

    def add_samples(self, samples: Iterable[Snapshot], *, session_id: str | None = None) -> int:
        """Insert and commit timeline rows (already downsampled); returns how many."""
        rows = [
            {
                "session_id": session_id,
                "wall_s": sample.wall_s,
                "monotonic_s": sample.monotonic_s,
                **{field: getattr(sample, field) for field in SAMPLE_FIELDS},
            }
            for sample in samples
        ]
        self._insert("samples", rows)
        return len(rows)

    # reading -----------------------------------------------------------------------------------

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        pd = importlib.import_module("pandas")  # slow to import: only queries need it

        with self._lock:
            try:
                return pd.read_sql_query(sql, self._conn, params=list(params))
            except sqlite3.Error as err:
                raise translate(err, self.path) from err

    @staticmethod
    def _where(
        clauses: list[tuple[str, Sequence[Any]]],
    ) -> tuple[str, list[Any]]:
        used = [(sql, values) for sql, values in clauses if values]
        if not used:
            return "", []
        text = " WHERE " + " AND ".join(sql for sql, _ in used)
        return text, [value for _, values in used for value in values]

    def _select(self, table: str, where: str, params: list[Any], last: int | None) -> pd.DataFrame:
        """Rows of ``table`` in insertion order; only the newest ``last`` if given."""
        sql = f"SELECT * FROM {table}{where} ORDER BY id DESC"
        if last is not None:
            sql += " LIMIT ?"
            params = [*params, int(last)]
        frame = self._frame(sql, params)
        return frame.iloc[::-1].reset_index(drop=True)

    def events(
        self,
        *,
        kind: str | Sequence[str] | None = None,
        session_id: str | None = None,
        last: int | None = None,
        detail: bool = False,
    ) -> pd.DataFrame:
        """Events, oldest first, one column per figure; ``features`` holds parsed dicts.

        Args:
            kind: One kind or several; None for all.
            session_id: Only this session's events.
            last: Only the newest ``last`` events.
            detail: Keep ``detail_json`` (full before/after snapshots; large).
        """
        kinds = [kind] if isinstance(kind, str) else list(kind or [])
        where, params = self._where(
            [
                (f"kind IN ({', '.join('?' * len(kinds))})", kinds),
                ("session_id = ?", [session_id] if session_id is not None else []),
            ]
        )
        frame = self._select("events", where, params, last)
        frame["features"] = frame.pop("features_json").map(json.loads)
        frame["ok"] = frame["ok"].astype(bool)
        frame["oom"] = frame["oom"].astype(bool)
        if not detail:
            frame = frame.drop(columns="detail_json")
        return frame

    def timeline(
        self,
        *,
        session_id: str | None = None,
        since_wall_s: float | None = None,
        last: int | None = None,
    ) -> pd.DataFrame:
        """Downsampled timeline rows, oldest first, with derived ``non_torch_gpu_bytes``."""
        where, params = self._where(
            [
                ("session_id = ?", [session_id] if session_id is not None else []),
                ("wall_s >= ?", [since_wall_s] if since_wall_s is not None else []),
            ]
        )
        frame = self._select("samples", where, params, last)
        frame["non_torch_gpu_bytes"] = (
            frame["nvml_process_used_bytes"] - frame["torch_reserved_bytes"]
        )
        return frame

    def latest_event_id(self, *, session_id: str | None = None,
                        kind: str | None = None) -> str | None:
        """Id of the newest event (of ``session_id``, of ``kind``), or None: a cheap question
        (one index lookup) that tells a reader whether anything new was recorded."""
        where, params = self._where(
            [
                ("kind = ?", [kind] if kind is not None else []),
                ("session_id = ?", [session_id] if session_id is not None else []),
            ]
        )
        with self._lock:
            row = self._conn.execute(
                f"SELECT event_id FROM events{where} ORDER BY id DESC LIMIT 1", params
            ).fetchone()
        return None if row is None else str(row[0])

    def sessions(self) -> pd.DataFrame:
        """All sessions, oldest first."""
        return self._frame("SELECT * FROM sessions ORDER BY started_wall_s")

    def export_csv(
        self, path: str | os.PathLike[str], *, table: str = "events", session_id: str | None = None
    ) -> Path:
        """Write a table (``events``, ``samples`` or ``sessions``) to CSV, JSON columns as text."""
        if table not in _TABLES:
            raise ValueError(f"table must be one of {_TABLES}")
        where, params = self._where(
            [("session_id = ?", [session_id] if session_id is not None else [])]
        )
        target = Path(path)
        self._frame(f"SELECT * FROM {table}{where}", params).to_csv(target, index=False)
        return target


def open_store(path: str | os.PathLike[str] | None = None, **options: Any) -> Store:
    """Open the store at ``path`` (default: :func:`default_db_path`); never fails.

    If the file cannot be used (read-only, locked, corrupt, newer schema), logs a warning and
    returns an in-memory store whose ``fallback_reason`` says why, so the app keeps running.
    """
    try:
        return Store(path, **options)
    except StoreError as err:
        _log.warning("event store unusable, keeping events in memory only: %s", err)
        store = Store(MEMORY)
        store.fallback_reason = str(err)
        return store
