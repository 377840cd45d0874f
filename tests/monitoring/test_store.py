"""Event store: round trip, queries, migrations, and files that cannot be used."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from monitoring import (
    Store,
    StoreCorruptError,
    StoreLockedError,
    StoreReadOnlyError,
    StoreSchemaError,
    Tracker,
    default_db_path,
    open_store,
    schema,
)
from monitoring.records import EventRecord

RunPython = Callable[..., subprocess.CompletedProcess[str]]


def tracked(store: Store, session: str, kind: str = "synthesis", **features: object) -> EventRecord:
    with Tracker(store=store, session_id=session).track(kind, kind, **features) as handle:
        pass
    assert handle.store_error is None
    return handle.record


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    with Store(path) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        session = store.start_session("test", engine="piper")
        record = tracked(store, session, text="hello", chars=5)
        store.log_event("recommendation", session_id=session, features={"clean": True})
        store.add_samples([record.before, record.after], session_id=session)
    with Store(path) as store:
        (mode,) = store._conn.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
        events = store.events(session_id=session)
        assert list(events["kind"]) == ["synthesis", "recommendation"]
        first = events.iloc[0]
        assert first["event_id"] == record.event_id
        assert first["features"] == {"text": "hello", "chars": 5}
        assert first["host_rss_before_bytes"] == record.before.host_rss_bytes
        assert first["host_rss_peak_bytes"] == record.peaks.host_rss_bytes
        assert first["duration_s"] == pytest.approx(record.duration_s)
        assert events.iloc[1]["features"] == {"clean": True}
        detail = json.loads(store.events(kind="synthesis", detail=True)["detail_json"][0])
        assert detail["after"]["host_rss_bytes"] == record.after.host_rss_bytes
        timeline = store.timeline(session_id=session)
        assert list(timeline["host_rss_bytes"]) == [
            record.before.host_rss_bytes,
            record.after.host_rss_bytes,
        ]
        assert store.sessions()["label"].tolist() == ["test"]


def test_queries_filter_and_keep_order() -> None:
    with Store(":memory:") as store:
        one, two = store.start_session(), store.start_session()
        for i in range(5):
            store.log_event("synthesis", session_id=one, label=f"s{i}")
            store.log_event("cleanup", session_id=two, label=f"c{i}")
        assert store.events(kind="cleanup")["label"].tolist() == [f"c{i}" for i in range(5)]
        assert store.events(last=3)["label"].tolist() == ["c3", "s4", "c4"]
        assert len(store.events(kind=["cleanup", "synthesis"], session_id=one)) == 5
        assert store.events(kind="load").empty
        with pytest.raises(ValueError, match="unknown event kind"):
            store.log_event("party")


def test_export_csv(tmp_path: Path) -> None:
    with Store(":memory:") as store:
        session = store.start_session()
        tracked(store, session, note="a,b")
        out = store.export_csv(tmp_path / "events.csv")
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 1
        assert json.loads(rows[0]["features_json"]) == {"note": "a,b"}
        samples = store.export_csv(tmp_path / "samples.csv", table="samples")
        assert pd.read_csv(samples).empty
        with pytest.raises(ValueError, match="table"):
            store.export_csv(tmp_path / "x.csv", table="sqlite_master")


def test_concurrent_writers_share_one_store() -> None:
    with Store(":memory:") as store:
        session = store.start_session()

        def write() -> None:
            for _ in range(50):
                store.log_event("synthesis", session_id=session)

        threads = [threading.Thread(target=write) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store.events(session_id=session)) == 200


def test_migrates_a_real_v1_file(tmp_path: Path) -> None:
    """A v1 database written by the v1 migration, with data, opened by the current code."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert schema.migrate(conn, str(path), target=1) == [1]
    conn.execute(
        "INSERT INTO events (event_id, kind, wall_s, host_rss_after_bytes) VALUES (?, ?, ?, ?)",
        ("old-event", "synthesis", 1.0, 123),
    )
    conn.execute("INSERT INTO samples (wall_s, host_rss_bytes) VALUES (1.0, 456)")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(samples)")}
    assert "torch_inactive_split_bytes" not in columns
    conn.close()

    with Store(path) as store:
        assert store.schema_version == 3
        events = store.events()
        assert events["event_id"].tolist() == ["old-event"]
        assert events["host_rss_after_bytes"].tolist() == [123]
        assert events["host_heap_in_use_after_bytes"].isna().all()  # v3: not measured then
        timeline = store.timeline()
        assert timeline["host_rss_bytes"].tolist() == [456]
        assert "torch_inactive_split_bytes" in timeline.columns
        indexes = {row[1] for row in store._conn.execute("PRAGMA index_list(events)")}
        assert "events_by_session" in indexes
        versions = [row[0] for row in store._conn.execute("SELECT version FROM schema_version")]
        assert versions == [1, 2, 3]
        tracked(store, store.start_session())
    with Store(path) as store:  # opening a current file migrates nothing more
        assert store.schema_version == 3
        assert len(store.events()) == 2


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.close()
    with pytest.raises(StoreSchemaError, match="newer"):
        Store(path)


def test_corrupt_file_gives_typed_error_and_fallback(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"this is not a database, just text " * 200)
    with pytest.raises(StoreCorruptError, match="not a valid SQLite database"):
        Store(path)
    store = open_store(path)
    assert store.in_memory
    assert "not a valid SQLite database" in (store.fallback_reason or "")
    store.log_event("error", label="still running")
    assert len(store.events()) == 1


def test_locked_file_gives_typed_error_and_fallback(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")  # a real second connection holding the write lock
    try:
        with pytest.raises(StoreLockedError, match="locked"):
            Store(path, busy_timeout_s=0.05)
        store = open_store(path, busy_timeout_s=0.05)
        assert store.in_memory
        assert "locked" in (store.fallback_reason or "")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_lock_held_when_our_store_opens_delays_writes_and_loses_none(tmp_path: Path) -> None:
    """Another process holds the write lock of this app's store when a run starts: the store
    opens on the file anyway (nothing to migrate needs no lock), the session row and the events
    wait in order, and are written once the lock goes (no fallback to memory)."""
    path = tmp_path / "ours.sqlite3"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store = Store(path, busy_timeout_s=0.05)
        assert not store.in_memory and store.fallback_reason is None
        session = store.start_session("run")
        with Tracker(store=store, session_id=session).track("synthesis") as handle:
            pass
        assert store.pending_writes == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.flush(10)
    assert list(store.events()["event_id"]) == [handle.record.event_id]
    assert store.sessions()["session_id"].tolist() == [session]
    store.close()


def test_lock_taken_mid_session_raises_on_explicit_write(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite3"
    with Store(path, busy_timeout_s=0.05) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreLockedError):
                store.log_event("synthesis")
            with Tracker(store=store).track("synthesis") as handle:
                pass
            assert handle.store_error is None  # a tracked event waits for the lock ...
            assert store.pending_writes == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.flush(10)  # ... and is written once the lock is gone
        store.log_event("synthesis")  # explicit writes work again too
        assert store.events()["event_id"].iloc[0] == handle.record.event_id
        assert len(store.events()) == 2 and store.events_lost == 0


def test_a_lock_held_during_work_loses_no_event_and_stalls_it_once(tmp_path: Path) -> None:
    """Another process holds the write lock while 10 events are tracked: none is lost, they
    are stored in order once it lets go, and the tracked work tries (and waits for) the lock
    once: the later events join the backlog at once."""
    import threading

    path = tmp_path / "held.sqlite3"
    with Store(path, busy_timeout_s=0.3) as store:
        tracker = Tracker(store=store)
        caller = threading.current_thread()
        tries = []
        real = store.add_event

        def counted(record):
            if threading.current_thread() is caller:
                tries.append(record.event_id)
            return real(record)

        store.add_event = counted  # type: ignore[method-assign]
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        ids = []
        for i in range(10):
            with tracker.track("synthesis", f"event {i}") as handle:
                pass
            ids.append(handle.record.event_id)
            assert handle.store_error is None
        assert store.pending_writes == 10 and tries == ids[:1]
        holder.execute("ROLLBACK")
        holder.close()
        assert store.flush(10)
        assert list(store.events()["event_id"]) == ids and store.events_lost == 0


READ_ONLY_CHILD = """
import json, sys
from monitoring import Store, StoreError, open_store
path = sys.argv[1] if len(sys.argv) > 1 else {path!r}
try:
    Store(path)
    error = None
except StoreError as err:
    error = type(err).__name__
store = open_store(path)
store.log_event("error", label="kept in memory")
rows = len(store.events())
print(json.dumps({{"error": error, "fallback": store.fallback_reason, "rows": rows}}))
"""


def test_read_only_file_gives_typed_error_and_fallback(run_python: RunPython) -> None:
    """A store file in a folder this process may not write to, opened by a child process.

    As a normal user the file and folder lose their write permission. Root ignores permission
    bits, so under root the child runs in its own mount namespace where the folder is a
    read-only bind mount (like a read-only container volume); skipped where that is not allowed.
    Nothing is faked: SQLite and the kernel refuse the writes.
    """
    folder = Path(tempfile.mkdtemp(prefix="ro-store-"))
    try:
        path = folder / "memory.sqlite3"
        Store(path).close()
        prefix: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("unshare") is None:
                pytest.skip("root without unshare: cannot make the folder read-only")
            script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
            prefix = ["unshare", "--mount", "--propagation", "private"]
            prefix += ["sh", "-c", script, "sh", str(folder)]
        else:
            path.chmod(0o444)
            folder.chmod(0o555)
        done = run_python(READ_ONLY_CHILD.format(path=str(path)), prefix=prefix)
        if prefix and done.returncode != 0 and "Traceback" not in done.stderr:
            pytest.skip(f"cannot mount read-only here: {done.stderr.strip()[:200]}")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["error"] == "StoreReadOnlyError"
        assert "not writable" in result["fallback"]
        assert result["rows"] == 1
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_read_only_check_in_process(tmp_path: Path) -> None:
    """A folder that cannot be created (its parent is a file) is reported as not writable."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreReadOnlyError, match="folder"):
        Store(blocker / "sub" / "memory.sqlite3")


def test_location_is_resolved_once_by_the_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, project_root: Path
) -> None:
    """monitoring reads no environment: the app resolves $GLMTTS_DB (glmtts.paths) and passes
    the path in."""
    from glmtts.paths import event_store_path

    monkeypatch.setenv("GLMTTS_DB", str(tmp_path / "env.sqlite3"))
    assert Path(default_db_path()) == project_root / "data" / "memory.sqlite3"
    with Store() as store:
        assert store.path == default_db_path()
    assert event_store_path() == str(tmp_path / "env.sqlite3")
    assert event_store_path("explicit.sqlite3") == "explicit.sqlite3"
    monkeypatch.setenv("GLMTTS_DB", ":memory:")
    with Store(event_store_path()) as store:
        assert store.in_memory
    monkeypatch.delenv("GLMTTS_DB")
    assert event_store_path() == default_db_path()


def test_latest_event_id_tells_whether_anything_new_was_recorded() -> None:
    with Store(":memory:") as store:
        session = store.start_session("t")
        assert store.latest_event_id(session_id=session) is None
        first = store.log_event("synthesis", session_id=session)
        store.log_event("cleanup", session_id=session)
        assert store.latest_event_id(session_id=session, kind="synthesis") == first
        assert store.latest_event_id(session_id=session) != first
        assert store.latest_event_id(session_id="other") is None


def test_another_programs_database_is_refused_unchanged(tmp_path: Path) -> None:
    """Pointing the store at someone else's SQLite file: refused before anything is written
    (no WAL switch, no tables of ours), and open_store falls back in memory, saying why."""
    from monitoring.errors import StoreSchemaError

    path = tmp_path / "theirs.db"
    theirs = sqlite3.connect(path)
    theirs.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    theirs.commit()
    theirs.close()
    before = path.read_bytes()
    with pytest.raises(StoreSchemaError, match="another program's SQLite database"):
        Store(path)
    store = open_store(path)
    assert store.in_memory and "invoices" in (store.fallback_reason or "")
    store.close()
    assert path.read_bytes() == before
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert {r[0] for r in check.execute("SELECT name FROM sqlite_master")} == {"invoices"}
    check.close()


def test_read_only_file_in_a_writable_folder_is_found_at_open(tmp_path: Path) -> None:
    """The file alone is read-only (its folder is writable): the store says so when it opens,
    not at the first event, and open_store falls back with the reason. Root ignores permission
    bits, so under root the file is made immutable (chattr +i); skipped where that fails."""
    path = tmp_path / "memory.sqlite3"
    Store(path).close()
    immutable = os.geteuid() == 0
    if immutable:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"root cannot make the file read-only here: {done.stderr.strip()}")
    else:
        path.chmod(0o444)
    try:
        with pytest.raises(StoreReadOnlyError, match="not writable"):
            Store(path)
        store = open_store(path)
        assert store.in_memory and "not writable" in (store.fallback_reason or "")
        store.log_event("error", label="kept in memory")
        assert len(store.events()) == 1
        store.close()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
