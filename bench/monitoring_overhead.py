"""What monitoring costs a synthesis: the same workload with and without tracking + a 10 Hz sampler.

Each repetition runs the workload twice back to back, plain and monitored, in alternating order,
so that load from other processes on a busy machine hits both sides of a pair alike. The ratio
is the median over repetitions of (monitored / plain); each side's median is printed too. Also
prints the cost of one snapshot, of
inserting 10,000 events (one commit each) and of querying the last 1,000.

Workload: the piper engine from ``glmtts`` when it imports and loads, else a CPU torch stack of
conv1d layers of similar cost (~0.3 s). The line saying which comes first.

Usage: python bench/monitoring_overhead.py [--reps N] [--workload auto|piper|torch]
Last line: ``ratio: X`` = median of the per-repetition ratios monitored time / plain time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring import Probes, Sampler, Store, Tracker

TEXT = "The quick brown fox jumps over the lazy dog while the memory monitor keeps count."
Workload = Callable[[], object]


def piper_workload() -> tuple[str, Workload]:
    """The real engine; raises if glmtts is not ready."""
    from glmtts.engines import create_engine  # optional: glmtts may not be ready
    from glmtts.request import SynthesisRequest

    engine = create_engine("piper")
    engine.load("cpu")
    request = SynthesisRequest(text=TEXT, seed=0)  # same audio length every time
    return "piper engine (glmtts), one sentence on CPU", lambda: engine.synthesize(request)


def torch_workload(target_s: float = 0.3) -> tuple[str, Workload]:
    """A stack of conv1d layers over ~1 s of 16 kHz audio features, sized to ``target_s``."""
    torch.manual_seed(0)
    layers = torch.nn.Sequential(
        *[torch.nn.Conv1d(64, 64, kernel_size=7, padding=3) for _ in range(4)]
    ).eval()
    features = torch.randn(1, 64, 16_000)

    def one_pass() -> torch.Tensor:
        with torch.inference_mode():
            return layers(features)

    for _ in range(3):
        one_pass()  # warm-up: the first passes are slower
    one_pass_s = min(timed(one_pass) for _ in range(3))
    passes = max(1, round(target_s / one_pass_s))

    def run() -> object:
        return [one_pass() for _ in range(passes)][-1]

    return f"CPU torch conv1d stack ({passes} passes of 4 layers, ~{target_s} s)", run


def pick_workload(choice: str) -> tuple[str, Workload]:
    if choice == "torch":
        return torch_workload()
    if choice == "piper":
        return piper_workload()
    try:
        return piper_workload()
    except Exception as err:  # noqa: BLE001  (any failure of the optional engine: fall back)
        print(f"piper workload unavailable ({type(err).__name__}: {err}); using torch")
        return torch_workload()


def timed(work: Workload) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def overhead(work: Workload, reps: int, store: Store) -> tuple[list[float], list[float]]:
    """Seconds of the plain and the monitored workload per repetition, interleaved."""
    probes = Probes()
    session = store.start_session("bench")
    plain: list[float] = []
    monitored: list[float] = []
    for rep in range(reps):
        for watch in (False, True) if rep % 2 == 0 else (True, False):
            if not watch:
                plain.append(timed(work))
                continue
            with Sampler(probes, interval_s=0.1, store=store, session_id=session) as sampler:
                tracker = Tracker(probes, sampler=sampler, store=store, session_id=session)

                def tracked(tracker: Tracker = tracker) -> None:
                    with tracker.track("synthesis", "bench"):
                        work()

                monitored.append(timed(tracked))
    return plain, monitored


def per_call_us(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def store_costs(store: Store) -> tuple[float, float]:
    """Seconds to insert 10,000 events one commit each, and to query the last 1,000."""
    with Tracker(store=None).track("synthesis", "template", chars=80) as handle:
        pass
    template = handle.record
    start = time.perf_counter()
    for _ in range(10_000):
        store.add_event(dataclasses.replace(template, event_id=uuid.uuid4().hex))
    insert_s = time.perf_counter() - start
    query_s = min(timed(lambda: store.events(last=1000)) for _ in range(3))
    return insert_s, query_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=25, help="repetitions per side")
    parser.add_argument(
        "--workload",
        choices=("auto", "piper", "torch"),
        default="auto",
        help="auto: piper if it loads",
    )
    args = parser.parse_args()

    name, work = pick_workload(args.workload)
    print(f"workload: {name}")
    for _ in range(2):
        work()  # warm caches and lazy initialisation on both sides' behalf

    probes = Probes()
    probes.snapshot()  # starts NVML (or records why not) outside the measurement
    cheap_us = per_call_us(lambda: probes.snapshot(host_peak=False), 2000)
    full_us = per_call_us(probes.snapshot, 2000)
    print(f"snapshot: {cheap_us:.1f} us (sampler's cheap probes), {full_us:.1f} us (all probes)")

    with tempfile.TemporaryDirectory() as folder:
        with Store(Path(folder) / "bench.sqlite3") as store:
            plain, monitored = overhead(work, args.reps, store)
        with Store(Path(folder) / "events.sqlite3") as store:
            insert_s, query_s = store_costs(store)
    print(f"store: insert 10,000 events {insert_s:.2f} s ({insert_s * 100:.0f} us each)")
    print(f"store: query last 1,000 events {query_s * 1e3:.1f} ms")
    plain_s, monitored_s = statistics.median(plain), statistics.median(monitored)
    ratios = [m / p for p, m in zip(plain, monitored, strict=True)]
    print(f"median plain {plain_s:.4f} s, monitored {monitored_s:.4f} s, {args.reps} reps each")
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"ratio of medians: {monitored_s / plain_s:.4f}")
    print(f"per-repetition ratios: quartiles {quartiles[0]:.4f} / {quartiles[2]:.4f} (noise)")
    print(f"ratio: {statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
