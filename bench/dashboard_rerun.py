"""Monitor-page rerun time with 10,000 stored events against the same page with 10.

Two AppTest sessions of the real app share one process (so one store and one sampler); one
browser session owns 10 synthesis events, the other 10,000 (real tracked events: each measured
by the tracker around a small allocation, committed to a real SQLite file). Reruns of the two
are interleaved; the last line is ``ratio: median(10,000) / median(10)``. Target: <= 3.

Usage: python bench/dashboard_rerun.py [--events N] [--reps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _monitor_app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/monitor.py").run()
    return at


def _fill(at, n: int) -> None:
    from monitoring import Tracker
    from ui.state import app_resources

    session = at.session_state["_tts_session"]
    tracker = Tracker(store=app_resources().store, session_id=session.session_id)
    for i in range(n):
        with tracker.track("synthesis", f"bench event {i}", text_chars=20 + i % 500,
                           sample_rate=22050, engine="piper"):
            block = bytearray(4096 * (1 + i % 64))
            block[::4096] = b"x" * len(block[::4096])


def _time_run(at) -> float:
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(at.exception)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GLMTTS_DB"] = str(Path(tmp) / "bench.sqlite3")
        small, big = _monitor_app(), _monitor_app()
        t0 = time.perf_counter()
        _fill(small, 10)
        _fill(big, args.events)
        print(f"stored {args.events + 10:,} tracked events in {time.perf_counter() - t0:.1f} s")
        for at in (small, big):  # warm both
            _time_run(at)
        times: dict[str, list[float]] = {"10": [], str(args.events): []}
        for _ in range(args.reps):
            times["10"].append(_time_run(small))
            times[str(args.events)].append(_time_run(big))
        for name, values in times.items():
            print(f"{name:>6} events: median rerun {statistics.median(values) * 1000:.0f} ms "
                  f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")
        ratio = statistics.median(times[str(args.events)]) / statistics.median(times["10"])
        from ui.state import app_resources

        app_resources().sampler.stop()
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
