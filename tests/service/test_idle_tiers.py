"""Idle release in tiers against a real server with tiny tiers (1, 2, 3 s): the tiers fire in
order as cleanup events with the idle marker and their freed bytes, the model is unloaded at
tier 2 and the next request reloads (that load carries the marker), and no tier fires while a
request is in flight (checked by the events' order in the store, not by timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring import open_store
from tests.waiting import wait_for as _wait_for

#: A text that keeps one synthesis running well past every tier (about 30 sentences).
LONG = " ".join(f"This is sentence number {i} of a text that takes a while to speak."
                for i in range(30))


def _events(service, kind: str):
    store = open_store(service.db)
    try:
        return store.events(kind=kind)
    finally:
        store.close()


def _idle_cleanups(service):
    events = _events(service, "cleanup")
    return events[events["features"].map(lambda f: f.get("trigger") == "idle")]


@pytest.mark.slow
def test_tiers_fire_in_order_reload_and_never_during_a_request(tmp_path: Path,
                                                               launch, parse_metrics) -> None:
    service = launch(tmp_path / "idle", "--preload", "--idle-tiers", "1,2,3")
    try:
        with service.client(timeout=300) as http:
            # 1. a whole idle period: light, then unload, then the restart skipped (in-process)
            idle = _wait_for(lambda: (s := http.get("/v1/memory").json()["idle"])["next_tier"]
                             is None and s)
            assert [f["tier"] for f in idle["fired"]] == [1, 2, 3]
            assert [f["level"] for f in idle["fired"]] == ["light", "full", "restart"]
            assert "this process" in idle["fired"][2]["skipped"]
            assert idle["tiers_s"] == [1.0, 2.0, 3.0]
            memory = http.get("/v1/memory").json()
            assert memory["session"]["loaded"] is False
            cleanups = _idle_cleanups(service)
            assert [f["tier"] for f in cleanups["features"]] == [1, 2]
            assert list(cleanups["label"]) == ["light", "full"]
            assert cleanups["host_rss_before_bytes"].notna().all()
            assert cleanups["host_rss_after_bytes"].notna().all()
            assert [f["event_id"] for f in idle["fired"][:2]] == list(cleanups["event_id"])
            assert all(f["host_rss_freed_bytes"] is not None for f in idle["fired"][:2])
            values = parse_metrics(http.get("/metrics").text)
            assert values[("glmtts_idle_releases_total", (("tier", "2"),))] == 1
            assert values[("glmtts_cleanups_total", (("level", "full"),))] >= 1

            # 2. the next request reloads (the load carries the marker) and succeeds
            answer = http.post("/v1/synthesize", json={"text": "Back again.", "seed": 3})
            assert answer.status_code == 200
            load = _events(service, "load").iloc[-1]
            assert answer.headers["x-load-event"] == load["event_id"]
            assert load["features"]["trigger"] == "idle" and load["features"]["tier"] == 2
            after = http.get("/v1/memory").json()["idle"]
            assert after["fired"] == [] or after["fired"][0]["tier"] == 1  # a new period
            # the cost of coming back, measured, in the tier's entry
            (unload,) = [e for e in after["recent"] if e.get("return_event_id")]
            assert unload["tier"] == 2 and unload["return_event_id"] == load["event_id"]
            assert unload["return_s"] == pytest.approx(load["duration_s"], abs=1e-3)

            # 3. one long request: no tier fires while it runs, they fire after it
            before = len(_idle_cleanups(service))
            long = http.post("/v1/synthesize", json={"text": LONG, "seed": 5})
            assert long.status_code == 200
            synthesis = _events(service, "synthesis").iloc[-1]
            assert synthesis["event_id"] == long.headers["x-synthesis-event"]
            start, end = synthesis["wall_s"], synthesis["wall_s"] + synthesis["duration_s"]
            _wait_for(lambda: len(_idle_cleanups(service)) >= before + 2)
            cleanups = _idle_cleanups(service)
            during = cleanups[(cleanups["wall_s"] > start) & (cleanups["wall_s"] < end)]
            assert during.empty, during[["label", "wall_s"]]
            later = cleanups[cleanups["wall_s"] >= end]
            assert [f["tier"] for f in later["features"]][:2] == [1, 2]
    finally:
        assert service.stop() == 0, service.output()


@pytest.mark.slow
def test_the_third_tier_restarts_an_engine_worker(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "worker", "--preload", "--isolate", "--idle-tiers", "1,2,3")
    try:
        with service.client(timeout=300) as http:
            before = _events(service, "load").iloc[-1]["features"]["worker_pid"]
            assert before is not None
            idle = _wait_for(lambda: (s := http.get("/v1/memory").json()["idle"])["next_tier"]
                             is None and s)
            assert [f.get("skipped") for f in idle["fired"]] == [None, None, None]
            cleanups = _idle_cleanups(service)
            assert list(cleanups["label"]) == ["light", "full", "restart"]
            assert [f["tier"] for f in cleanups["features"]] == [1, 2, 3]
            state = http.get("/v1/memory").json()
            assert state["admission"]["capacity"] == 1  # a worker serves one at a time
            assert "worker" in state["admission"]["capacity_reason"]
            answer = http.post("/v1/synthesize", json={"text": "Back again."})
            assert answer.status_code == 200
            load = _events(service, "load").iloc[-1]
            assert load["features"]["tier"] == 3 and load["features"]["trigger"] == "idle"
            assert load["features"]["worker_pid"] != before
    finally:
        assert service.stop() == 0, service.output()
