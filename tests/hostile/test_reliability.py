"""The reliability harness of ``bench/hostile.py`` run as a test, shorter (a 60 s audio bomb,
a 3 s store lock, batches of 10 and 5 lines): every hostile request of the issue against a real
service process, 32 slow clients from another loopback address, batches whose store is locked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.hostile import run


@pytest.mark.slow
def test_hostile_clients_and_store_faults_take_nothing_down(tmp_path: Path) -> None:
    report = run(tmp_path, bomb_seconds=60, lock_s=3.0, batch_lines=10, normal=3,
                 server_args=("--body-timeout", "4", "--header-timeout", "3"))
    answers = report.answers
    assert report.server_errors == [], answers
    assert report.tracebacks == 0
    assert answers["service exit code"] == 0
    assert report.bomb_rss_increase < 100 * 2**20
    assert answers["audio bomb (FLAC, 8 ch, 192 kHz)"] == 422
    for case in ("JSON nested 100,000 deep ([)", "5,000-digit seed", "5,000-digit cleanup level",
                 "invalid UTF-8", "multipart without boundary"):
        assert answers[case] == 400, (case, answers[case])
    assert answers["lone surrogate key"] == 422
    assert (answers["HEAD /v1/health"], answers["lower-case bearer"]) == (200, 200)
    assert answers["wrong token"] == 401
    assert all(answers[f"stalled body {i}"] == 408 for i in range(1, 17)), answers
    assert all(answers[f"trickled head {i}"] == 408 for i in range(1, 17)), answers
    assert report.normal_ok == report.normal_sent > 0
    assert report.lock_held_s >= 3.0
    assert (report.events_stored, report.batch_stored) == (report.events_expected,
                                                           report.batch_expected)
    assert report.ratio == 1.0
