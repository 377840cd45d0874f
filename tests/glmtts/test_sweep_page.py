"""AppTest run of the Tune page with a tiny grid (the twin at a small scale on the CPU)."""

from __future__ import annotations

import json

import pytest

from glmtts.device import cuda_unavailable_reason

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
    # a time estimate before the run: a stated guess while no twin synthesis is on record
    assert any(c.value.startswith("2 point(s) to run, about ") and "a guess" in c.value
               for c in at.caption), [c.value for c in at.caption]
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
    at.run()  # the next estimate comes from those syntheses
    assert any(c.value.startswith("2 point(s) to run, about ")
               and "from this engine's earlier syntheses here" in c.value for c in at.caption)


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="the CPU default (no GPU here)")
def test_the_cpu_default_grid_is_small(tune_page) -> None:
    """Without a GPU the default sweep is the twin at its CPU scale, both rates, KV off and
    on, a one- and a two-segment text: 8 points (it ends within a minute on 2 cores)."""
    at = tune_page
    assert at.text_area(key="tune_texts").value.count("\n") == 1
    assert any(c.value.startswith("8 point(s) to run") for c in at.caption)
