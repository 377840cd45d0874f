"""Cleanup actions with real probes: what they free, how long they take, what they record."""

from __future__ import annotations

import sys

import pytest
import torch

from monitoring import Store, Tracker, cleanup

MiB = 1024**2


def test_light_cleanup_is_measured_and_recorded() -> None:
    with Store(":memory:") as store:
        tracker = Tracker(store=store, session_id=store.start_session())
        result = cleanup.light(tracker=tracker)
        assert result.level == "light"
        assert result.duration_s >= 0
        assert result.gc_collected >= 0
        assert result.empty_cache_called is torch.cuda.is_available()
        if sys.platform.startswith("linux"):
            assert result.malloc_trimmed in (True, False)
        assert result.host_rss_freed_bytes is not None
        events = store.events(kind="cleanup")
        assert len(events) == 1
        features = events.iloc[0]["features"]
        assert features["level"] == "light"
        assert features["gc_collected"] == result.gc_collected


def test_full_cleanup_releases_the_callers_model() -> None:
    held = {"model": torch.ones(32 * MiB)}  # 128 MiB standing in for loaded weights

    def release() -> None:
        held.clear()

    result = cleanup.full(release)
    assert result.level == "full"
    assert held == {}
    assert result.host_rss_freed_bytes is not None
    assert result.host_rss_freed_bytes >= 100 * MiB
    assert result.event.features["level"] == "full"


def test_full_cleanup_records_a_failing_release() -> None:
    with Store(":memory:") as store:
        tracker = Tracker(store=store)

        def release() -> None:
            raise RuntimeError("engine refused to unload")

        with pytest.raises(RuntimeError, match="refused"):
            cleanup.full(release, tracker=tracker)
        row = store.events(kind="cleanup").iloc[0]
        assert row["ok"] == False  # noqa: E712  (numpy bool)
        assert row["error_message"] == "engine refused to unload"


def test_malloc_trim_answers_on_linux() -> None:
    answer = cleanup.malloc_trim()
    if sys.platform.startswith("linux"):
        assert answer in (True, False)
    else:
        assert answer is None
