"""Chart builders: DataFrames in, Plotly figures out; no Streamlit, bounded point counts."""

from __future__ import annotations

import itertools

import pandas as pd

from monitoring import charts
from monitoring.sampler import Marker
from monitoring.snapshot import Snapshot

MIB = 2**20


def _samples(n: int) -> list[Snapshot]:
    return [Snapshot(monotonic_s=float(i), wall_s=1_700_000_000.0 + i / 10,
                     host_rss_bytes=(500 + (i % 100)) * MIB) for i in range(n)]


def test_timeline_draws_present_series_and_markers() -> None:
    frame = charts.samples_frame(_samples(50))
    markers = charts.markers_frame([
        Marker("synthesis", "start", "hi", "e1", 1.0, 1_700_000_000.1),
        Marker("synthesis", "end", "hi", "e1", 2.0, 1_700_000_000.2),
        Marker("cleanup", "end", "full", "e2", 3.0, 1_700_000_000.3),
    ])
    fig = charts.timeline_figure(frame, markers).to_dict()
    lines = [t for t in fig["data"] if t.get("meta", {}).get("column")]
    assert [t["meta"]["column"] for t in lines] == ["host_rss_bytes"]  # GPU series are empty
    syn = [t for t in fig["data"] if t.get("meta", {}).get("markers") == "synthesis"]
    assert len(syn) == 1 and len(syn[0]["x"]) == 1  # only the end marker is drawn
    assert syn[0]["meta"]["event_ids"] == ["e1"]
    assert any(t.get("meta", {}).get("markers") == "cleanup" for t in fig["data"])


def test_timeline_is_downsampled_but_keeps_peaks() -> None:
    samples = _samples(20_000)
    spike = Snapshot(monotonic_s=0.5, wall_s=1_700_000_000.05, host_rss_bytes=5000 * MIB)
    samples.insert(12_345, spike)
    fig = charts.timeline_figure(charts.samples_frame(samples), max_points=500)
    (line,) = fig.data
    assert len(line.y) <= 500
    assert max(line.y) == 5000.0


def _events(n: int, leak_per_step: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        before = (600 + i * leak_per_step) * MIB
        rows.append({"kind": "synthesis", "label": f"s{i}", "host_rss_before_bytes": before,
                     "host_rss_after_bytes": before + leak_per_step * MIB,
                     "host_rss_peak_bytes": before + 80 * MIB})
    rows.append({"kind": "cleanup", "label": "full"})
    return pd.DataFrame(rows)


def test_growth_frame_and_figure() -> None:
    events = _events(5, leak_per_step=10)
    frame = charts.growth_frame(events)
    assert list(frame["n"]) == [1, 2, 3, 4, 5]
    assert (frame["host_rss_retained_bytes"] == 10 * MIB).all()
    assert (frame["host_rss_peak_delta_bytes"] == 80 * MIB).all()
    fig = charts.growth_figure(events).to_dict()
    assert fig["layout"]["meta"]["figure"] == "host_rss"
    assert len(fig["data"]) == 3


def test_growth_level_axis_has_round_ticks_that_cover_the_line() -> None:
    events = _events(7, leak_per_step=7)  # levels 607.0 ... 649.0 MiB: no round numbers
    axis = charts.growth_figure(events).to_dict()["layout"]["yaxis2"]
    ticks = axis["tickvals"]
    step = ticks[1] - ticks[0]
    assert step in (1, 2, 5, 10, 20, 50) and 3 <= len(ticks) <= 8
    assert all(t % step == 0 for t in ticks)
    assert all(b - a == step for a, b in itertools.pairwise(ticks))
    assert ticks[0] <= 607 and ticks[-1] >= 649 and axis["range"] == [ticks[0], ticks[-1]]
    assert charts.nice_ticks(759.3, 804.2) == [750, 760, 770, 780, 790, 800, 810]


def test_growth_figure_bounded_for_many_events() -> None:
    fig = charts.growth_figure(_events(10_000, leak_per_step=1), max_points=600)
    assert all(len(t.x) <= 600 for t in fig.data)


def test_growth_prefers_gpu_figures_when_present() -> None:
    events = _events(3, 1)
    events["nvml_process_before_bytes"] = 7 * 2**30
    events["nvml_process_after_bytes"] = 7 * 2**30 + 200 * MIB
    assert charts.primary_figure(charts.growth_frame(events)) == "nvml_process"


def test_breakdown_rows_split_retained_and_transient() -> None:
    event = {"torch_allocated_before_bytes": 100, "torch_allocated_after_bytes": 150,
             "torch_allocated_peak_bytes": 400, "torch_reserved_before_bytes": 200,
             "torch_reserved_after_bytes": 500, "torch_reserved_peak_bytes": 700,
             "non_torch_gpu_before_bytes": 10, "non_torch_gpu_after_bytes": 30,
             "host_rss_before_bytes": 1000, "host_rss_after_bytes": 1100,
             "host_rss_peak_bytes": 1500}
    rows = charts.breakdown_rows(event).set_index("part")
    assert rows.loc["torch live tensors"].tolist() == [50, 250]
    assert rows.loc["torch allocator cache", "retained_bytes"] == 250  # 300 reserved - 50 live
    assert rows.loc["host RSS"].tolist() == [100, 400]
    cpu_only = charts.breakdown_rows({"host_rss_before_bytes": 1, "host_rss_after_bytes": 3,
                                      "host_rss_peak_bytes": 9})
    assert list(cpu_only["part"]) == ["host RSS"]
    assert charts.breakdown_figure(event).to_dict()["data"]


def test_the_stored_timeline_fills_what_the_buffer_does_not_reach() -> None:
    """After a restart the ring buffer holds seconds; the store's persisted rows (one per
    second) come first, then the buffer, without overlap."""
    import pandas as pd

    from monitoring import charts
    from monitoring.snapshot import Snapshot

    buffered = charts.samples_frame([Snapshot(monotonic_s=t, wall_s=1000.0 + t,
                                              host_rss_bytes=200) for t in (0.0, 0.1, 0.2)])
    stored = pd.DataFrame({"wall_s": [900.0, 950.0, 1000.1], "host_rss_bytes": [100, 150, 999],
                           "session_id": ["old", "old", "now"]})
    joined = charts.stitch_stored(buffered, stored)
    assert list(joined["wall_s"]) == [900.0, 950.0, 1000.0, 1000.1, 1000.2]
    assert list(joined["host_rss_bytes"]) == [100, 150, 200, 200, 200]
    assert joined["time"].is_monotonic_increasing
    assert charts.stitch_stored(buffered, stored.iloc[0:0]) is buffered
    assert list(charts.stitch_stored(buffered.iloc[0:0], stored)["wall_s"]) == [900.0, 950.0,
                                                                               1000.1]


def test_markers_that_overlap_are_stacked_and_say_whose_they_are() -> None:
    frame = charts.samples_frame(_samples(600))  # 60 s of samples
    markers = charts.markers_frame([
        Marker("synthesis", "end", "a", "e1", 1.0, 1_700_000_010.0),
        Marker("cleanup", "end", "full", "e2", 1.1, 1_700_000_010.1),  # 0.1 s later: overlaps
        Marker("synthesis", "end", "b", "e3", 2.0, 1_700_000_040.0),  # far from both
    ])
    fig = charts.timeline_figure(frame, markers, tz="Asia/Shanghai")
    shown = [t for t in fig.data if (t.meta or {}).get("markers")]
    heights = {}
    for trace in shown:
        heights.update(zip(trace.meta["event_ids"], list(trace.y), strict=True))
    assert heights["e2"] > heights["e1"] == heights["e3"]
    names = [t.name for t in shown]
    assert names == ["synthesis (2, every session of this process)",
                     "cleanup (1, every session of this process)"]
    assert fig.layout.xaxis.title.text == "time (Asia/Shanghai)"


def test_growth_chart_names_whose_level_it_is() -> None:
    events = pd.DataFrame({
        "kind": ["synthesis"] * 3, "label": ["a", "b", "c"],
        "host_rss_before_bytes": [500 * MIB, 510 * MIB, 515 * MIB],
        "host_rss_after_bytes": [510 * MIB, 515 * MIB, 516 * MIB],
        "host_rss_peak_bytes": [540 * MIB, 530 * MIB, 520 * MIB]})
    fig = charts.growth_figure(events)
    assert [t.name for t in fig.data] == [
        "peak above its start (MiB)", "retained after it (MiB)",
        "host RSS after each: the whole process (every session)"]
    assert fig.data[0].marker.color != fig.data[1].marker.color
    assert fig.layout.barmode == "group" and fig.layout.yaxis2.tickformat == ",.0f"
    assert fig.layout.xaxis.title.text == "synthesis # in this browser session"
