"""Does the twin's analytic memory estimate match what a synthesis really takes?

Runs the tuning sweep (:mod:`glmtts.sweep`) with the twin on the CPU over KV switch x sample
rate x its three default texts (one, three and eight segments): every point is a tracked
synthesis. Each point's measured peak is host RSS, from the tracker:

    model resident (the load event's retained RSS)
  + the synthesis's peak above its own start (``VmHWM`` reset at the start, after a light
    cleanup that returns freed heap to the OS),

compared with the twin's estimate from shapes alone (weights + attention KV cache + the largest
activation, :mod:`glmtts.engines.twin.estimate`).

Not in that sum, and printed apart: the CPU runtime's one-time state (oneDNN and FFT kernel
caches, an OpenMP worker and its malloc arena), which the warm-up synthesis takes and keeps
(tens of MiB, whatever the model's size). The sweep's own ``peak_bytes`` (peak above the RSS
before loading) includes it; the second ratio printed uses that.

Host RSS is page-granular and glibc keeps some freed memory, so at tiny scales the noise
outweighs the model: the bench runs at scale 0.15, where the weights (~205 MiB fp32) dominate
as they do at full size (8 GiB). Last line: ``ratio: X`` = median over points of measured /
estimated.

Usage: python bench/twin_fidelity.py [--scale 0.15] [--dtype fp32] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glmtts.engines import create_engine
from glmtts.request import SynthesisRequest
from glmtts.sweep import MIB, SweepSpec, run_sweep
from monitoring import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.15)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: steady on a shared machine; memory does not "
                         "depend on it beyond the runtime state)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    engine = create_engine("twin", scale=args.scale, dtype=args.dtype)
    store = Store(":memory:")
    t0 = time.perf_counter()
    result = run_sweep(SweepSpec(engine="twin", scale=args.scale, dtypes=(args.dtype,),
                                 device="cpu"), store=store)
    wall = time.perf_counter() - t0
    frame = result.frame
    events = store.events()
    load = events[events["kind"] == "load"].iloc[0]
    warmups = events[(events["kind"] == "synthesis") & ~events["event_id"].isin(
        frame["event_id"])]  # one per output rate, before the points
    resident = int(load["host_rss_after_bytes"] - load["host_rss_before_bytes"])
    runtime = int((warmups["host_rss_after_bytes"] - warmups["host_rss_before_bytes"]).sum())
    first = engine.estimate(SynthesisRequest(text=frame["text"].iloc[0]))
    print(f"twin at scale {args.scale} ({args.dtype}), {engine.parameter_count:,} parameters: "
          f"weights {first.weights_bytes / MIB:.1f} MiB estimated, {resident / MIB:.1f} MiB "
          f"resident after the load (measured)")
    print(f"one-time runtime state (retained by the warm-up syntheses, in no estimate): "
          f"{runtime / MIB:.1f} MiB")
    print(f"{'chars':>5} {'rate':>6} {'KV':>3} {'segs':>4} {'measured':>9} {'estimated':>9} "
          f"{'ratio':>6} {'transient':>9} {'est.':>6} {'phase':>14} {'with runtime':>12} "
          f"{'latency':>8}")
    ratios, with_runtime = [], []
    for _, row in frame.iterrows():
        request = SynthesisRequest(text=row["text"], sample_rate=int(row["sample_rate"]),
                                   use_kv_cache=bool(row["use_kv_cache"]), seed=42)
        estimate = engine.estimate(request)
        measured = resident + row["peak_delta_bytes"]
        ratios.append(measured / estimate.total_bytes)
        with_runtime.append(row["peak_bytes"] / estimate.total_bytes)
        kv = "on" if row["use_kv_cache"] else "off"
        print(f"{row['text_chars']:5d} {row['sample_rate']:6d} {kv:>3} {row['segments']:4d} "
              f"{measured / MIB:9.1f} {estimate.total_bytes / MIB:9.1f} {ratios[-1]:6.3f} "
              f"{row['peak_delta_bytes'] / MIB:9.1f} {estimate.transient_bytes / MIB:6.1f} "
              f"{estimate.phase:>14} {with_runtime[-1]:12.3f} {row['latency_s']:7.1f}s")
    print("MiB. measured = model resident + peak above the synthesis's start; transient = that "
          "peak alone, est. = estimated cache + activations; with runtime = the sweep's "
          "peak_bytes (above the RSS before loading) / estimate")
    print(f"{len(frame)} points in {wall:.0f} s; median ratio with the runtime state: "
          f"{statistics.median(with_runtime):.3f}")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
