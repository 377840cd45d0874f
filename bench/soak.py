"""Soak: host memory over hundreds of syntheses in one session, and the floor after cleanups.

One :class:`glmtts.session.SynthesisSession` (piper engine, the embedded voice, CPU, no store,
policy in its default *advise* mode) speaks deterministic texts of 10-400 characters
(``bench._texts.soak_texts``; lengths skewed towards short texts so that 600 syntheses fit in
5 minutes on a 2-core machine: mean about 53 characters, 36 of 600 over 200). Part 1:
``--count`` syntheses with no cleanup asked for (the session's own bounded heap trim, see
``monitoring.release.trim_if_grown``, is what is measured), printing this process's RSS after
10, 100, 200 and the last. Part 2: three cycles of ``--cycle`` syntheses, each followed by a
full cleanup (the model unloaded, gc, ``malloc_trim``), printing the RSS floor after each
cleanup and the spread of the three floors (target: within 10 MB). Torch runs one thread.
After the load and each floor it also prints what the RSS is made of: file-backed pages
(shared libraries' code, the memory-mapped voice) and anonymous memory, and of that the C heap
in live blocks and held free (``monitoring.heap``); last, what one heap read costs.

Usage: python bench/soak.py [--count N] [--cycle N] [--threads N]
Last line: ``ratio: X`` (RSS after the last synthesis of part 1 / RSS after the 10th; target
<= 1.3).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._texts import soak_texts
from glmtts.request import SynthesisRequest


def rss_mb() -> float:
    from monitoring.release import rss_bytes

    return (rss_bytes() or 0) / 1e6


def anon_mb() -> float:
    """This process's anonymous resident memory (MB): RSS without the file-backed pages,
    whose share depends on what the machine's page cache holds (libraries' code)."""
    from monitoring import heap

    return (heap.rss_anon_bytes() or 0) / 1e6


def parts() -> str:
    """What the RSS is made of now (MB): file-backed, anonymous, and the C heap's share."""
    from monitoring import heap

    figures = heap.read()
    anon = anon_mb()
    text = f"file-backed {rss_mb() - anon:.0f} MB, anonymous {anon:.0f} MB"
    if figures is not None:
        held = figures.releasable_bytes
        text += (f" (C heap: {figures.in_use_bytes / 1e6:.0f} MB in live blocks, "
                 f"{'?' if held is None else f'{held / 1e6:.0f}'} MB held free)")
    return text


def heap_read_cost() -> str:
    """Median wall time of one heap read (glibc walks every free block)."""
    import statistics

    from monitoring import heap

    times = []
    for _ in range(21):
        t0 = time.perf_counter()
        figures = heap.read()
        times.append(time.perf_counter() - t0)
    chunks = figures.free_chunks if figures is not None else 0
    return f"{statistics.median(times) * 1e3:.2f} ms ({chunks} free blocks)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--cycle", type=int, default=100)
    parser.add_argument("--skew", type=float, default=3.0,
                        help="text length skew (1: log-uniform, mean 110 characters; the "
                             "default 3 favours short texts, mean 53, so that 600 syntheses "
                             "fit in 5 minutes on a small machine)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's own choice; 1, the default, as the "
                             "other benchmarks: steadier on a small shared machine)")
    args = parser.parse_args()
    from glmtts.session import SynthesisSession

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    texts = soak_texts(args.count + 3 * args.cycle, skew=args.skew)
    session = SynthesisSession("piper", device="cpu", label="soak")
    t0 = time.perf_counter()
    session.ensure_loaded()
    print(f"RSS after load: {rss_mb():.0f} MB: {parts()}; texts {min(map(len, texts))}-"
          f"{max(map(len, texts))} characters, mean {sum(map(len, texts)) / len(texts):.0f}")
    marks = sorted({10, 100, 200, args.count} & set(range(1, args.count + 1)))
    at: dict[int, float] = {}
    audio_s = 0.0
    for i, text in enumerate(texts[: args.count], 1):
        audio_s += session.synthesize(SynthesisRequest(text=text, seed=i)).result.duration_s
        if i in marks:
            at[i] = rss_mb()
            print(f"RSS after {i:3d} syntheses: {at[i]:6.0f} MB "
                  f"({time.perf_counter() - t0:.0f} s, {audio_s:.0f} s of audio)")
    floors, anon = [], []
    done = args.count
    for cycle in range(3):
        for text in texts[done: done + args.cycle]:
            done += 1
            session.synthesize(SynthesisRequest(text=text, seed=done))
        result = session.cleanup("full")
        floors.append(rss_mb())
        anon.append(anon_mb())
        print(f"cycle {cycle + 1}: {args.cycle} syntheses, full cleanup "
              f"({result.duration_s:.2f} s) -> floor {floors[-1]:.0f} MB: {parts()}")
    spread = max(floors) - min(floors)
    print(f"floors within {spread:.1f} MB of each other (target <= 10): "
          f"{'yes' if spread <= 10 else 'no'} (anonymous memory alone: within "
          f"{max(anon) - min(anon):.1f} MB); total {time.perf_counter() - t0:.0f} s")
    print(f"one heap read (glibc mallinfo2): {heap_read_cost()}")
    session.close()
    print(f"ratio: {at[args.count] / at[min(at)]:.3f}")


if __name__ == "__main__":
    main()
