"""What running an engine in a worker process costs a synthesis: the same piper syntheses in a
worker (protocol round trips, the request and the audio over a socket) and in this process.

Both engines load the embedded voice once, before timing. Each repetition runs the three texts
(short, medium, about 600 characters) on both sides back to back, in alternating order, so that
load from other processes hits both sides alike; both run torch with the same thread count.
Each side's time is the wall time seen by the caller (for the worker: the call, the synthesis
in the worker, the audio coming back). The ratio is the median over repetitions of worker /
in-process; the audio is checked to be bit-identical.

Usage: python bench/worker_overhead.py [--reps N] [--threads N]
Last line: ``ratio: X`` (worker / in process; target <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._texts import TEXTS
from glmtts.engines import create_engine
from glmtts.request import SynthesisRequest
from glmtts.worker.engine import WorkerEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    requests = [SynthesisRequest(text=text, seed=1) for text in TEXTS.values()]
    local = create_engine("piper")
    local.load("cpu")
    worker = WorkerEngine("piper")
    t0 = time.perf_counter()
    worker.load("cpu")
    print(f"worker pid {worker.pid}: started and loaded in {time.perf_counter() - t0:.2f} s "
          f"(start {worker.last_start_s:.2f} s), torch threads {args.threads} on both sides")
    try:
        for request in requests:  # warm-up, and the audio must match
            assert np.array_equal(local.synthesize(request).audio,
                                  worker.synthesize(request).audio), "audio differs"
        ratios, plain, isolated = [], [], []
        for rep in range(args.reps):
            times = {}
            order = (("local", local), ("worker", worker))
            for name, engine in (order if rep % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                for request in requests:
                    engine.synthesize(request)
                times[name] = time.perf_counter() - t0
            plain.append(times["local"])
            isolated.append(times["worker"])
            ratios.append(times["worker"] / times["local"])
        audio_s = sum(local.synthesize(r).duration_s for r in requests)
        print(f"{len(requests)} texts ({audio_s:.1f} s of audio) x {args.reps} repetitions")
        print(f"in process: median {statistics.median(plain):.3f} s per repetition")
        print(f"in a worker: median {statistics.median(isolated):.3f} s per repetition")
        print("audio: bit-identical")
        print(f"ratio: {statistics.median(ratios):.3f}")
    finally:
        worker.close()
        local.unload()


if __name__ == "__main__":
    main()
