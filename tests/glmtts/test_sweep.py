"""The tuning sweep: grid planning, tracked points, ranking, charts, CSV, command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from glmtts.errors import GlmTtsError
from glmtts.sweep import (
    SweepSpec,
    fitting_configurations,
    plan_sweep,
    rank_configurations,
    run_sweep,
    sweep_figures,
)
from monitoring import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


ROOT = Path(__file__).resolve().parents[2]
SHORT = "Hello there, how are you today?"
MEDIUM = "The quick brown fox jumps over the lazy dog, while the old man watches."


@pytest.fixture(scope="module")
def twin_sweep():
    store = Store(":memory:")
    spec = SweepSpec(engine="twin", texts=(SHORT, MEDIUM), sample_rates=(32000,),
                     kv=(False, True), scale=0.02, device="cpu")
    seen = []
    result = run_sweep(spec, store=store, progress=lambda d, t, p: seen.append((d, t, p)))
    return result, store, seen


def test_twin_grid_has_every_axis() -> None:
    spec = SweepSpec(engine="twin", texts=(SHORT, MEDIUM), dtypes=("fp32", "bf16"),
                     attention_cache=(True, False), scale=0.02)
    points, notes = plan_sweep(spec)
    assert len(points) == 2 * 2 * 2 * 2 * 2  # texts x rates x kv x dtype x attention cache
    assert any("not speech" in n for n in notes)
    assert {dict(p.options)["scale"] for p in points} == {0.02}


def test_piper_grid_collapses_to_what_it_honours() -> None:
    spec = SweepSpec(engine="piper", texts=(SHORT,), sample_rates=(24000, 32000, 12345),
                     kv=(False, True), dtypes=("fp32", "bf16"), attention_cache=(True, False),
                     scale=0.5)
    points, notes = plan_sweep(spec)
    assert sorted(p.sample_rate for p in points) == [24000, 32000]  # resampled: stays
    assert {p.use_kv_cache for p in points} == {False}
    assert all(p.options == () for p in points)
    text = " ".join(notes)
    assert "KV cache only 'off'" in text and "12345" in text and "scale" in text
    assert "dtype" in text and "attention_cache" in text


def test_empty_grid_is_an_error() -> None:
    with pytest.raises(GlmTtsError):
        plan_sweep(SweepSpec(texts=("  ",), scale=0.02))


def test_every_point_is_a_tracked_event(twin_sweep) -> None:
    result, store, seen = twin_sweep
    frame = result.frame
    assert len(frame) == 4 and (frame["status"] == "ok").all()
    synth = store.events(kind="synthesis")
    assert set(frame["event_id"]) <= set(synth["event_id"])
    assert len(store.events(kind="load")) == 1
    assert (frame["figure"] == "host_rss").all()
    assert (frame["peak_bytes"] > frame["model_bytes"] * 0.5).all()
    # every point counts from the same loaded state plus its own peak: what earlier points
    # left behind (host RSS grows a little with each) does not raise later points' needs
    assert (frame["peak_bytes"] - frame["peak_delta_bytes"]).nunique() == 1
    assert frame["predicted_peak_bytes"].notna().all()
    assert (frame["sample_rate"] == 32000).all()
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4] and seen[-1][2] is None
    medium_on = frame[(frame["text_chars"] == len(MEDIUM)) & frame["use_kv_cache"]]
    assert int(medium_on["segments"].iloc[0]) == 2


def test_ranking_charts_and_csv(twin_sweep, tmp_path: Path) -> None:
    frame = twin_sweep[0].frame
    ranked = rank_configurations(frame, budget_bytes=2**40)
    assert len(ranked) == 2 and ranked["fits"].all()
    assert list(ranked["need_bytes"]) == sorted(ranked["need_bytes"])
    assert set(ranked["configuration"]) == {"KV off", "KV on"}
    assert fitting_configurations(frame, 1).empty
    figures = sweep_figures(frame)
    assert set(figures) == {"peak", "retained", "latency"}
    names = [t.name for t in figures["peak"].data]
    assert "KV on" in names and "KV on (predicted)" in names
    path = tmp_path / "sweep.csv"
    frame.to_csv(path, index=False)
    assert len(pd.read_csv(path)) == 4


def test_ranking_by_need_then_latency_with_predictions() -> None:
    frame = pd.DataFrame([
        {"engine": "x", "sample_rate": 24000, "use_kv_cache": False, "text_chars": 10,
         "peak_bytes": 300, "predicted_peak_bytes": None, "latency_s": 2.0, "status": "ok"},
        {"engine": "x", "sample_rate": 32000, "use_kv_cache": False, "text_chars": 10,
         "peak_bytes": 300, "predicted_peak_bytes": None, "latency_s": 1.0, "status": "ok"},
        {"engine": "x", "sample_rate": 24000, "use_kv_cache": True, "text_chars": 10,
         "peak_bytes": None, "predicted_peak_bytes": 900, "latency_s": None,
         "status": "skipped"},
    ])
    ranked = rank_configurations(frame, budget_bytes=500)
    assert list(ranked["configuration"]) == ["32 kHz · KV off", "24 kHz · KV off",
                                             "24 kHz · KV on"]
    assert list(ranked["fits"]) == [True, True, False]
    assert ranked["need_source"].iloc[2] == "predicted"


def test_budget_skips_points_predicted_over_it() -> None:
    spec = SweepSpec(engine="twin", texts=(SHORT,), sample_rates=(24000,), kv=(False,),
                     scale=0.02, device="cpu", budget_bytes=1024)
    result = run_sweep(spec)
    assert list(result.frame["status"]) == ["skipped"]
    assert fitting_configurations(result.frame, 1024).empty


def test_piper_sweep_runs() -> None:
    spec = SweepSpec(engine="piper", texts=(SHORT,), sample_rates=(24000, 32000),
                     kv=(False, True), device="cpu", warmup=False)
    frame = run_sweep(spec).frame
    assert len(frame) == 2 and (frame["status"] == "ok").all()
    assert sorted(frame["sample_rate"]) == [24000, 32000]
    assert frame["predicted_peak_bytes"].isna().all()  # piper makes no prediction


def test_command_line_writes_one_row_per_point(tmp_path: Path) -> None:
    out = tmp_path / "sweep.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "glmtts", "sweep", "--texts", SHORT, "--sample-rates", "24000",
         "--kv", "off", "on", "--dtype", "fp32", "bf16", "--scale", "0.02", "--cpu",
         "--budget-gb", "4", "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 4
    assert set(zip(frame["dtype"], frame["use_kv_cache"], strict=True)) == {
        ("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    assert "not speech" in proc.stdout and "fits" in proc.stdout


def test_coinciding_lines_are_drawn_once_and_titles_are_words() -> None:
    """Two configurations whose figures are the same (piper ignores the KV switch) give one
    line named for both, so the legend lists only what can be seen."""
    import pandas as pd

    from glmtts.sweep import sweep_figures

    rows = []
    for kv in (False, True):
        for rate, extra in ((24000, 0), (32000, 5 * 2**20)):
            for chars, peak in ((10, 100 * 2**20), (100, 120 * 2**20)):
                rows.append({"engine": "piper", "status": "ok", "use_kv_cache": kv,
                             "sample_rate": rate, "text_chars": chars,
                             "peak_bytes": peak + extra, "retained_bytes": 2**20,
                             "latency_s": chars / 100, "predicted_peak_bytes": None,
                             "figure": "host_rss"})
    figures = sweep_figures(pd.DataFrame(rows))
    peak = figures["peak"]
    assert [t.name for t in peak.data] == ["24 kHz · KV off = 24 kHz · KV on (the same)",
                                          "32 kHz · KV off = 32 kHz · KV on (the same)"]
    assert peak.layout.title.text == ("Peak (MiB above the start before loading), measured "
                                      "as host RSS (the whole process)")
    assert len(figures["retained"].data) == 1  # all four configurations retain the same
