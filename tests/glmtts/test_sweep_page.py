"""AppTest run of the Tune page with a tiny grid (the twin at a small scale on the CPU)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture
def tune_page(open_app):
    return open_app("pages/tune.py")


def test_tune_page_runs_a_tiny_sweep(tune_page) -> None:
    at = tune_page
    assert at.selectbox(key="tune_engine").value == "twin"
    assert any("not speech" in i.value for i in at.info)
    at.number_input(key="tune_scale").set_value(0.02)
    at.multiselect(key="tune_rates").set_value([24000])
    at.text_area(key="tune_texts").set_value("Hello there, how are you today?")
    at.run()
    assert any("2 point(s)" in c.value for c in at.caption)
    at.button(key="tune_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert len(figures) == 3
    peak = figures[0]
    assert {t["name"] for t in peak["data"]} >= {"KV off", "KV on"}
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 2
    assert at.get("download_button")
    # Every point was a tracked event in the app's store.
    from ui.state import app_resources

    events = app_resources().store.events(kind="synthesis")
    assert len(events) >= 2
