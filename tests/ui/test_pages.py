"""AppTest runs of every page with the real engine, a real SQLite file and the real sampler."""

from __future__ import annotations

import json

import pytest


def _synthesize(at, text: str = "Hello from the test. Second sentence here."):
    at.text_area(key="text").set_value(text)
    at.button(key="synthesize").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _whole_files(at) -> list:
    """The page's whole-file players (the live player, which autoplays, is the other one)."""
    return [a for a in at.get("audio") if not a.proto.autoplay]


def test_synthesize_produces_audio_and_a_memory_card(app) -> None:
    _synthesize(app)
    assert len(_whole_files(app)) == 1
    metrics = _metrics(app)
    assert metrics["host RSS"].endswith("iB")
    # on a CPU the card leads with what exists; the GPU figures are one line, not four "n/a"
    assert next(iter(metrics)) == "host RSS" and "n/a" not in metrics.values()
    assert any(c.value.startswith("Not measured here: torch allocated, torch reserved, GPU")
               for c in app.caption)
    assert metrics["load"] != "warm"  # the first synthesis loaded the model
    assert float(metrics["real-time factor"]) > 0
    assert any("loaded on `cpu`" in m.value for m in app.sidebar.markdown)
    _synthesize(app, "Again, please.")
    assert _metrics(app)["load"] == "warm"


def test_bad_text_shows_an_error_and_no_audio(app) -> None:
    app.text_area(key="text").set_value("  !!! 🎉 ")
    app.button(key="synthesize").click().run()
    assert not app.exception
    assert "no letters or digits" in app.error[0].value
    assert not app.get("audio")


def test_cleanup_reports_freed_bytes_and_keeps_the_form(app) -> None:
    text = "Keep this text exactly as typed."
    app.selectbox(key="sample_rate").set_value(24000)
    app.number_input(key="seed").set_value(7)
    app.slider(key="speed").set_value(1.25)
    _synthesize(app, text)
    app.button(key="cleanup_button").click().run()
    assert not app.exception
    (message,) = [s.value for s in app.sidebar.success]
    assert "Full cleanup freed host RSS" in message
    assert any("not loaded" in m.value for m in app.sidebar.markdown)
    assert app.text_area(key="text").value == text
    assert app.selectbox(key="sample_rate").value == 24000
    assert app.number_input(key="seed").value == 7
    assert app.slider(key="speed").value == 1.25
    # The next synthesis reloads.
    _synthesize(app, text)
    assert _metrics(app)["load"] != "warm"


def test_light_cleanup_keeps_the_model(app) -> None:
    _synthesize(app)
    app.radio(key="cleanup_level").set_value("light")
    app.button(key="cleanup_button").click().run()
    assert "Light cleanup freed" in app.sidebar.success[0].value
    assert any("loaded on `cpu`" in m.value for m in app.sidebar.markdown)


@pytest.mark.slow
def test_an_engine_in_a_worker_and_its_restart(app) -> None:
    """The isolation toggle runs the voice in a worker process; the sidebar offers the restart
    level with what it frees and costs, the timeline draws the worker's memory, and a restart
    ends the process."""
    import psutil

    app.toggle(key="isolate_piper").set_value(True).run()
    assert not app.exception, app.exception
    assert any("Worker pid" in c.value for c in app.caption)
    _synthesize(app)
    assert any("in worker pid" in m.value for m in app.sidebar.markdown)
    assert "Restart" in app.radio(key="cleanup_level").options
    offer = " ".join(c.value for c in app.sidebar.caption)
    assert "**restart**: frees" in offer and "coming back costs" in offer
    app.switch_page("pages/monitor.py").run()
    assert not app.exception, app.exception
    traces = [t for f in _figures(app) for t in f["data"]]
    worker_lines = [t for t in traces if "engine worker (pid" in str((t.get("meta") or {})
                                                                      .get("process"))]
    assert worker_lines and worker_lines[0]["line"]["dash"] == "dash"
    app.switch_page("pages/synthesize.py").run()
    pid = int(next(c.value for c in app.caption if "Worker pid" in c.value)
              .split("pid ")[1].split(":")[0])
    app.radio(key="cleanup_level").set_value("restart")
    app.button(key="cleanup_button").click().run()
    assert not app.exception, app.exception
    (message,) = [s.value for s in app.sidebar.success]
    assert message.startswith(f"Restart cleanup in worker pid {pid} freed host RSS")
    psutil_gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert psutil_gone
    assert any("worker not running" in c.value.lower() for c in app.caption)
    _synthesize(app, "Back after the restart.")
    assert len(app.get("audio")) == 1


def _figures(at) -> list[dict]:
    """Figure JSON of every plotly chart on the page (an UnknownElement in AppTest)."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_monitor_chart_holds_synthesis_markers(app) -> None:
    _synthesize(app)
    app.switch_page("pages/monitor.py").run()
    assert not app.exception, app.exception
    figures = _figures(app)
    traces = [t for f in figures for t in f["data"]]
    marker_traces = [t for t in traces if (t.get("meta") or {}).get("markers") == "synthesis"]
    assert marker_traces and len(marker_traces[0]["x"]) >= 1
    assert any((t.get("meta") or {}).get("column") == "host_rss_bytes" for t in traces)
    assert any("No GPU data" in i.value for i in app.info)
    assert len(figures) == 3  # timeline, growth curve, latest breakdown


def test_monitor_without_syntheses(app) -> None:
    app.switch_page("pages/monitor.py").run()
    assert not app.exception
    assert any("No synthesis yet" in c.value for c in app.caption)


def test_history_lists_the_events(app) -> None:
    _synthesize(app)
    app.button(key="cleanup_button").click().run()
    app.switch_page("pages/history.py").run()
    assert not app.exception, app.exception
    table = app.dataframe[0].value
    assert list(table["Kind"])[::-1] == ["load", "synthesis", "cleanup"]
    # read by a person: named columns, human units, the zone said (UTC without a browser)
    assert list(table.columns[:4]) == ["Time (UTC)", "Kind", "What", "Took"]
    synthesis = table[table["Kind"] == "synthesis"].iloc[0]
    assert synthesis["OK"] == "yes" and synthesis["Error"] == ""
    assert synthesis["Host RSS change"][0] in "+-" and "iB" in synthesis["Host RSS change"]
    assert "None" not in table.to_string() and "nan" not in table.to_string()
    assert any("times in UTC" in c.value for c in app.caption)
    app.multiselect(key="history_kinds").set_value(["synthesis"]).run()
    assert list(app.dataframe[0].value["Kind"]) == ["synthesis"]


@pytest.mark.parametrize("page", ["pages/synthesize.py", "pages/monitor.py", "pages/history.py",
                                  "pages/batch.py", "pages/tune.py"])
def test_every_page_has_the_sidebar(app, page: str) -> None:
    app.switch_page(page).run()
    assert not app.exception
    assert app.button(key="cleanup_button")
    assert any("No GPU" in m.value or "GPU " in m.value for m in app.sidebar.markdown)


def test_sidebar_recommends_and_auto_mode_acts(app) -> None:
    _synthesize(app)
    assert any("🧭" in str(getattr(e, "icon", "")) or "cleanup" in e.value.lower()
               for e in [*app.sidebar.info, *app.sidebar.warning, *app.sidebar.error])
    app.radio(key="policy_mode").set_value("off").run()
    assert not [e for e in app.sidebar.info if "cleanup" in e.value.lower()]
    app.radio(key="policy_mode").set_value("auto").run()
    session = app.session_state["_tts_session"]
    assert session.policy_mode == "auto"
    _synthesize(app, "Auto mode on, and it still speaks.")
    assert len(_whole_files(app)) == 1


def test_the_side_port_counts_what_the_browser_does(open_app) -> None:
    """The app's /metrics side port counts syntheses and cleanups made on the page (the
    tracker gives every record to the metrics, as in the HTTP service)."""
    import socket

    import httpx

    from ui import metrics_port

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    metrics_port.stop_metrics_port()
    exporter = metrics_port.start_metrics_port(port)
    assert exporter is not None
    try:
        app = open_app()
        _synthesize(app)
        app.button(key="cleanup_button").click().run()
        assert not app.exception, app.exception
        text = httpx.get(exporter.url, timeout=10).text
        lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                 for line in text.splitlines() if line and not line.startswith("#")}
        assert lines['glmtts_events_total{kind="synthesis",outcome="ok"}'] >= 1
        assert lines['glmtts_events_total{kind="load",outcome="ok"}'] >= 1
        assert lines['glmtts_cleanups_total{level="full"}'] >= 1
        assert lines['glmtts_cleanup_freed_bytes_total{figure="host_rss",level="full"}'] > 0
    finally:
        metrics_port.stop_metrics_port()


def test_the_sidebar_advises_on_the_request_that_runs(app, monkeypatch) -> None:
    """One builder for the page and the sidebar: the policy is asked about exactly the request
    that the Synthesize button sends (voice, rate, seed, speed included)."""
    from glmtts.session import SynthesisSession

    asked, ran = [], []
    recommend, synthesize = SynthesisSession.recommend, SynthesisSession.synthesize

    def spy_recommend(self, request=None, *, record=True):
        if not record:  # the sidebar asks without recording
            asked.append(request)
        return recommend(self, request, record=record)

    def spy_synthesize(self, request, **kw):
        ran.append(request)
        return synthesize(self, request, **kw)

    monkeypatch.setattr(SynthesisSession, "recommend", spy_recommend)
    monkeypatch.setattr(SynthesisSession, "synthesize", spy_synthesize)
    app.selectbox(key="sample_rate").set_value(24000)
    app.number_input(key="seed").set_value(9)
    app.slider(key="speed").set_value(1.2)
    _synthesize(app, "The same request, twice asked.")
    assert ran and asked
    assert asked[-1] == ran[-1]
    assert (ran[-1].sample_rate, ran[-1].seed, ran[-1].speed) == (24000, 9, 1.2)


def test_monitor_reaches_back_past_a_restart_through_the_store(app) -> None:
    """The timeline of an earlier app process (persisted, one row per second) is drawn before
    the live buffer when the span reaches further back than the buffer does."""
    import os
    import time

    from monitoring.snapshot import Snapshot
    from ui.state import app_resources

    store = app_resources().store
    earlier = store.start_session("app", pid=os.getpid() + 1)  # as an earlier app process did
    then = time.time() - 200
    store.add_samples([Snapshot(monotonic_s=float(i), wall_s=then + i, host_rss_bytes=123 << 20)
                       for i in range(5)], session_id=earlier)
    app.switch_page("pages/monitor.py").run()
    assert not app.exception, app.exception
    (timeline, *_) = _figures(app)
    rss = next(t for t in timeline["data"]
               if (t.get("meta") or {}).get("column") == "host_rss_bytes")
    ys = rss["y"]
    if isinstance(ys, dict):  # plotly's typed-array encoding
        import base64

        import numpy as np

        ys = np.frombuffer(base64.b64decode(ys["bdata"]), dtype=ys["dtype"]).tolist()
    assert any(abs(y - 123) < 0.01 for y in ys)  # the stored minutes, in MiB
    assert len(rss["x"]) == len(ys) and len(ys) >= 5


def test_history_with_no_kind_selected_shows_no_event(app) -> None:
    _synthesize(app)
    app.switch_page("pages/history.py").run()
    assert list(app.dataframe[0].value["Kind"])[::-1] == ["load", "synthesis"]
    app.multiselect(key="history_kinds").set_value([]).run()
    assert not app.exception, app.exception
    assert len(app.dataframe[0].value) == 0
    assert any("No kind of event is selected" in i.value for i in app.info)


def test_precision_box_refuses_fp16_on_the_cpu_and_bf16_shows_on_the_card(app) -> None:
    app.selectbox(key="engine").set_value("twin").run()
    assert app.selectbox(key="dtype").value == "auto"
    app.selectbox(key="dtype").set_value("fp16").run()
    assert not app.exception
    assert any(e.value.startswith("fp16 is refused on the CPU") for e in app.error)
    assert app.button(key="synthesize").disabled
    app.selectbox(key="dtype").set_value("bf16").run()
    assert not app.error
    _synthesize(app, "Half the weights.")
    assert any(c.value.startswith("Precision bf16: ") and c.value.endswith(" of weights")
               for c in app.caption)
    assert app.selectbox(key="dtype").value == "bf16"  # kept like the other settings
