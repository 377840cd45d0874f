"""The sidebar's idle release in the real app (AppTest, the real voice and SQLite file, the
process's real releaser thread): off by default; with tiers of 1, 2 and 3 s they fire in order
after a synthesis as cleanup events with the idle marker and their freed bytes, the sidebar
says what the last one freed and, after the next synthesis, what coming back cost; and no tier
fires while a synthesis runs (checked by the events' order in the store, not by timing). The
waits are bounded (60 s); the test takes about 15 s here."""

from __future__ import annotations

import pytest

from tests.waiting import wait_for as _wait_for
from ui.idle import last_line
from ui.state import app_resources

#: Several sentences: one synthesis that runs for a while (the tiers are 1, 2 and 3 s).
LONG = " ".join(f"This is sentence number {i} of a text that takes a while to speak."
                for i in range(8))


def _idle_cleanups():
    events = app_resources().store.events(kind="cleanup")
    return events[events["features"].map(lambda f: f.get("trigger") == "idle")]


def _synthesize(at, text: str) -> None:
    at.text_area(key="text").set_value(text)
    at.button(key="synthesize").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _captions(at) -> list[str]:
    return [c.value for c in at.sidebar.caption]


@pytest.mark.slow
def test_idle_tiers_fire_in_order_measured_and_never_during_a_synthesis(app) -> None:
    # off by default: no tiers, no countdown
    assert app.text_input(key="idle_tiers").value == "off"
    assert "_idle" not in app.session_state
    assert not any(c.startswith("⏱️") for c in _captions(app))

    app.text_input(key="idle_tiers").set_value("1,2,3").run()
    assert any("Nothing loaded: nothing to release." in c for c in _captions(app))
    _synthesize(app, "Hello there. A second sentence.")
    tiers = app.session_state["_idle"]

    # 1. a whole idle period: light, unload, and the restart skipped (no worker)
    state = _wait_for(lambda: (s := tiers.state())["next_tier"] is None and s["fired"] and s)
    assert [f["tier"] for f in state["fired"]] == [1, 2, 3]
    assert [f["level"] for f in state["fired"]] == ["light", "full", "restart"]
    assert "no worker to restart" in state["fired"][2]["skipped"]
    cleanups = _idle_cleanups()
    assert list(cleanups["label"]) == ["light", "full"]
    assert [f["tier"] for f in cleanups["features"]] == [1, 2]
    assert cleanups["host_rss_before_bytes"].notna().all()
    assert cleanups["host_rss_after_bytes"].notna().all()
    assert [f["event_id"] for f in state["fired"][:2]] == list(cleanups["event_id"])
    assert all(f["host_rss_freed_bytes"] is not None for f in state["fired"][:2])

    app.run()  # the sidebar: the unload's freed bytes, the reload not measured yet
    captions = _captions(app)
    assert any("Every tier ran in this idle period" in c for c in captions), captions
    assert any(c.startswith("Last: tier 2 (unload the model) freed host RSS")
               and "not measured yet" in c for c in captions), captions
    assert any(c.startswith("Tier 3 (restart the worker) skipped") for c in captions)
    assert any("not loaded" in m.value for m in app.sidebar.markdown)

    # 2. the next synthesis reloads: its load carries the marker, its cost is shown
    _synthesize(app, LONG)
    synthesis = app_resources().store.events(kind="synthesis").iloc[-1]
    load = app_resources().store.events(kind="load").iloc[-1]
    assert load["features"]["trigger"] == "idle" and load["features"]["tier"] == 2
    returned = [e for e in tiers.state()["recent"] if e.get("return_event_id")]
    assert returned[-1]["return_event_id"] == load["event_id"]
    assert returned[-1]["return_s"] == pytest.approx(load["duration_s"], abs=1e-3)
    assert "coming back cost" in last_line(returned[-1])  # what the sidebar says of it

    # 3. none fired during that synthesis; they fire after it, in order again
    before = len(_idle_cleanups())
    _wait_for(lambda: len(_idle_cleanups()) >= before + 2)
    cleanups = _idle_cleanups()
    start, end = synthesis["wall_s"], synthesis["wall_s"] + synthesis["duration_s"]
    during = cleanups[(cleanups["wall_s"] > load["wall_s"]) & (cleanups["wall_s"] < end)]
    assert during.empty, during[["label", "wall_s"]]
    assert start >= load["wall_s"]
    later = cleanups[cleanups["wall_s"] >= end]
    assert [f["tier"] for f in later["features"]][:2] == [1, 2]

    # the setting is kept across pages like the other widgets; off stops the tiers
    app.switch_page("pages/history.py").run()
    assert app.text_input(key="idle_tiers").value == "1,2,3"
    app.text_input(key="idle_tiers").set_value("off").run()
    assert tiers.tiers == ()
    assert not any(c.startswith("⏱️") for c in _captions(app))


def test_bad_tiers_are_refused_in_words(app) -> None:
    app.text_input(key="idle_tiers").set_value("3,2,1").run()
    assert not app.exception
    assert any("up to three increasing numbers of seconds" in e.value for e in app.sidebar.error)
    assert "_idle" not in app.session_state


@pytest.mark.slow
def test_the_third_tier_restarts_the_worker_after_the_engine_moved_into_one(app) -> None:
    """Tiers turned on first, then the voice moved into a worker process (a new engine and a
    new tracker under the tiers): the three tiers run, the third ends the worker, and the
    next synthesis starts a fresh one, its load marked."""
    import psutil

    app.text_input(key="idle_tiers").set_value("1,2,3").run()
    app.toggle(key="isolate_piper").set_value(True).run()
    assert not app.exception, app.exception
    _synthesize(app, "Hello from the worker.")
    pid = app_resources().store.events(kind="load").iloc[-1]["features"]["worker_pid"]
    assert pid is not None
    tiers = app.session_state["_idle"]
    state = _wait_for(lambda: (s := tiers.state())["next_tier"] is None and s["fired"] and s)
    assert [f.get("skipped") for f in state["fired"]] == [None, None, None]
    synthesis = app_resources().store.events(kind="synthesis").iloc[-1]
    cleanups = _idle_cleanups()  # (a worker idle before the synthesis may have had a light one)
    cleanups = cleanups[cleanups["wall_s"] >= synthesis["wall_s"] + synthesis["duration_s"]]
    assert list(cleanups["label"]) == ["light", "full", "restart"]
    assert [f["tier"] for f in cleanups["features"]] == [1, 2, 3]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    app.run()
    assert any(c.startswith("Last: tier 3 (restart the worker) freed host RSS")
               for c in _captions(app)), _captions(app)
    _synthesize(app, "Back again.")
    load = app_resources().store.events(kind="load").iloc[-1]
    assert load["features"]["tier"] == 3 and load["features"]["trigger"] == "idle"
    assert load["features"]["worker_pid"] != pid
