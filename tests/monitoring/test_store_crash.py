"""A writer killed with SIGKILL loses no event it reported as committed."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from monitoring import Store

WRITER = Path(__file__).with_name("crash_writer.py")
REPORTED_BEFORE_KILL = 200


def test_kill_9_loses_no_committed_event(
    tmp_path: Path, child_env: dict[str, str], project_root: Path
) -> None:
    path = tmp_path / "crash.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
        cwd=project_root,
    )
    reported: list[str] = []
    try:
        while len(reported) < REPORTED_BEFORE_KILL:
            line = writer.stdout.readline()
            assert line, f"writer stopped early: {writer.stderr.read()}"
            reported.append(line.strip())
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    reported.extend(line.strip() for line in writer.stdout.read().splitlines() if line.strip())
    writer.stdout.close()
    writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL

    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    with Store(path) as store:
        stored = set(store.events(kind="synthesis")["event_id"])
    missing = [event_id for event_id in reported if event_id not in stored]
    assert missing == []
    assert len(stored) >= len(reported)
