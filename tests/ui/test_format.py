from monitoring.units import fmt_bytes as one_formatter
from ui.format import fmt_bytes, fmt_seconds


def test_fmt_bytes() -> None:
    assert fmt_bytes is one_formatter  # the pages, the policy and the CLI write alike
    assert fmt_bytes(None) == "n/a"
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(150 * 2**20) == "150 MiB"
    assert fmt_bytes(62_601_836) == "59.7 MiB"
    assert fmt_bytes(-3 * 2**30, signed=True) == "-3.0 GiB"
    assert fmt_bytes(2**20, signed=True) == "+1.0 MiB"
    assert fmt_bytes(float("nan")) == "n/a"


def test_fmt_seconds() -> None:
    assert fmt_seconds(None) == "n/a"
    assert fmt_seconds(0.0123) == "12 ms"
    assert fmt_seconds(3.2) == "3.2 s"
    assert fmt_seconds(11.84) == "11.8 s"
    assert fmt_seconds(245) == "4 min 05 s"


def test_history_times_are_in_the_browser_zone_with_the_zone_named() -> None:
    import pandas as pd

    from ui.history_table import readable_events

    events = pd.DataFrame({"wall_s": [1_764_600_000.0], "kind": ["synthesis"], "label": [None],
                           "duration_s": [0.1234], "ok": [True], "error_type": [None],
                           "host_rss_before_bytes": [100 * 2**20],
                           "host_rss_after_bytes": [110 * 2**20],
                           "host_rss_peak_bytes": [150 * 2**20],
                           "features": [{"dtype": "bf16", "engine": "twin"}]})
    la = readable_events(events, "America/Los_Angeles")
    utc = readable_events(events, None)
    assert la.columns[0] == "Time (America/Los_Angeles)" and utc.columns[0] == "Time (UTC)"
    # 2025-12-01 14:40 UTC is 06:40 in Los Angeles (PST, UTC-8)
    assert utc.iloc[0, 0] == "2025-12-01 14:40:00" and la.iloc[0, 0] == "2025-12-01 06:40:00"
    row = la.iloc[0]
    assert (row["Took"], row["Host RSS change"], row["Host RSS peak above start"],
            row["What"]) == ("123 ms", "+10.0 MiB", "+50.0 MiB", "")
    assert row["Precision"] == "bf16"  # runs in two precisions tell apart
    unknown = readable_events(events, "Not/AZone")  # a zone this machine does not know: UTC
    assert unknown.columns[0] == "Time (UTC)" and unknown.iloc[0, 0] == utc.iloc[0, 0]


def test_the_history_csv_has_every_matching_row(tmp_path) -> None:
    """10,000 stored events export as 10,000 CSV rows (not the 1,000 the page shows), with
    ISO-8601 UTC times and the features as JSON (a real SQLite file)."""
    import csv
    import io
    import json

    from monitoring import Store
    from ui.history_table import export_frame

    with Store(tmp_path / "events.sqlite3") as store:
        for i in range(10_000):
            store.log_event("synthesis" if i % 2 else "cleanup", label=f"event {i}",
                            features={"i": i, "engine": "piper"})
        rows = export_frame(store.events(kind=["synthesis", "cleanup"]))
        only = export_frame(store.events(kind="cleanup"))
    table = list(csv.DictReader(io.StringIO(rows.to_csv(index=False))))
    assert len(table) == 10_000 and len(only) == 5_000
    assert table[0]["time_utc"].endswith("+00:00") and "T" in table[0]["time_utc"]
    assert sorted(json.loads(r["features"])["i"] for r in table) == list(range(10_000))
