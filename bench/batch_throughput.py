"""Throughput of the batch runner against a plain loop over the engine, on the same 50 lines.

Batch side: ``load_tasks`` + :class:`glmtts.batch.BatchRunner` through a
:class:`glmtts.session.SynthesisSession` with an SQLite event store, exactly as
``python -m glmtts batch`` runs (validation, memory tracking of every line, atomic WAV, fsynced
manifest entry). Plain side: ``create_engine("piper").load("cpu")``, then per line
``engine.synthesize(SynthesisRequest(...))`` and the same atomic, fsynced WAV write.

Both models are loaded and warmed up before timing (loads are reported, not compared). The two
sides alternate line by line, and which goes first swaps every line, so that machine noise hits
both alike. Same texts, same seeds: the same audio. The whole comparison runs ``--rounds``
times (3; a fresh output folder each) and each line keeps its best time per side: on a shared
machine noise only ever adds time, so the per-line minimum is the fair estimate of the cost.
Rounds stop early when the next one would end after ``--budget-s`` (200 s), so the run stays
within 5 minutes. Printed: each round's ratio of totals, the ratio of the summed best times
(the batch side includes validation and runner set-up), and, last, ``ratio: batch / plain`` as
the median over lines of the paired per-line ratio: the two sides of a line run back to back,
so they see the same load, and a burst of load from other processes shifts the median of the
pairs far less than it shifts a sum (on a quiet machine the two ratios agree).

Torch runs single-threaded on both sides by default (``--threads``): on a shared machine,
OpenMP threads competing with other processes' threads make each synthesis several times slower
and far noisier (measured here: two identical plain engines alternating differed by up to 25%
with two threads under load, by under 1% with one), which would measure the neighbours rather
than the runner. Both sides use the same setting, so the comparison stays like for like.

Usage: python bench/batch_throughput.py [--lines 50] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glmtts.batch import BatchRunner, load_tasks, write_wav_atomic
from glmtts.engines import create_engine
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from monitoring import open_store

OPENINGS = ["Hello there", "Good morning", "Listen", "Well", "Right now", "Today",
            "In the end", "By the way", "Once again", "Later on"]
MIDDLES = ["the train is late", "we met at the corner", "the tea is ready",
           "it may rain soon", "the cat sat still"]
ENDINGS = [".", "!", "?", ", thank you.", ", as always."]


def texts(n: int) -> list[str]:
    """``n`` short, varied, deterministic sentences (about 15-45 characters)."""
    return [f"{OPENINGS[i % 10]}, {MIDDLES[(i * 3) % 5]}{ENDINGS[(i * 7) % 5]}"
            for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=200.0,
                    help="start no further round when it would likely end after this")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for both sides (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lines = texts(args.lines)
    n, rounds = len(lines), args.rounds
    inf = float("inf")
    batch_t = [inf] * n
    plain_t = [inf] * n
    setup_t = inf
    totals: list[tuple[float, float]] = []
    audio = [0.0, 0.0]

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        root = Path(tmp)
        tasks = root / "tasks.jsonl"
        tasks.write_text("".join(json.dumps({"uttid": f"b{i:03d}", "syn_text": t, "seed": i})
                                 + "\n" for i, t in enumerate(lines)), encoding="utf-8")
        store = open_store(root / "events.sqlite3")
        session = SynthesisSession("piper", device="cpu", store=store, label="bench")
        t0 = time.perf_counter()
        session.ensure_loaded()
        load_batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine = create_engine("piper")
        engine.load("cpu")
        load_plain = time.perf_counter() - t0
        print(f"load: session {load_batch:.2f} s, plain engine {load_plain:.2f} s (not compared); "
              f"torch threads: {torch.get_num_threads()}")
        session.synthesize(SynthesisRequest(text="Warm up, please.", seed=0))
        engine.synthesize(SynthesisRequest(text="Warm up, please.", seed=0))

        for rnd in range(rounds):
            spent = time.perf_counter() - started
            if totals and spent + spent / len(totals) > args.budget_s:
                print(f"stopping after {len(totals)} round(s): time budget "
                      f"({args.budget_s:.0f} s) nearly spent")
                break
            plain_dir = root / f"plain{rnd}"
            plain_dir.mkdir()
            round_batch = round_plain = 0.0

            def plain_step(i: int, folder: Path = plain_dir) -> float:
                t = time.perf_counter()
                result = engine.synthesize(SynthesisRequest(text=lines[i], seed=i))
                write_wav_atomic(folder / f"b{i:03d}.wav", result.audio, result.sample_rate)
                audio[1] += result.duration_s
                return time.perf_counter() - t

            t = time.perf_counter()
            plan = load_tasks(tasks, engines={"piper": session.engine})
            runner = BatchRunner(plan, root / f"batch{rnd}", session)
            runner.__enter__()
            steps = iter(runner)
            setup = time.perf_counter() - t
            setup_t = min(setup_t, setup)
            round_batch += setup
            try:
                for i in range(n):
                    plain_first = (i + rnd) % 2 == 1
                    if plain_first:
                        p = plain_step(i)
                    t = time.perf_counter()
                    result = next(steps)
                    b = time.perf_counter() - t
                    if not plain_first:
                        p = plain_step(i)
                    assert result.status == "ok", result.reason
                    audio[0] += result.audio_s or 0.0
                    batch_t[i], plain_t[i] = min(batch_t[i], b), min(plain_t[i], p)
                    round_batch, round_plain = round_batch + b, round_plain + p
                t = time.perf_counter()
                for _ in steps:  # nothing left: ends the iteration
                    pass
            finally:
                runner.close()
            round_batch += time.perf_counter() - t
            totals.append((round_batch, round_plain))
            print(f"round {rnd + 1}: batch {round_batch:.3f} s, plain {round_plain:.3f} s, "
                  f"ratio of totals {round_batch / round_plain:.3f}")
        session.close()
        store.close()

    rounds = len(totals)
    batch_s = setup_t + sum(batch_t)
    plain_s = sum(plain_t)
    print(f"lines: {n} ({min(map(len, lines))}-{max(map(len, lines))} characters), "
          f"{audio[0] / rounds:.1f} s of audio per side per round (plain "
          f"{audio[1] / rounds:.1f} s)")
    print(f"best of {rounds} per line: batch runner {batch_s:.3f} s "
          f"({batch_s / n * 1000:.1f} ms/line, set-up {setup_t * 1000:.1f} ms), plain loop "
          f"{plain_s:.3f} s ({plain_s / n * 1000:.1f} ms/line)")
    print(f"overhead per line: {(batch_s - plain_s) / n * 1000:+.2f} ms")
    print(f"ratio of the summed best times: {batch_s / plain_s:.3f}")
    paired = statistics.median(b / p for b, p in zip(batch_t, plain_t, strict=True))
    print(f"ratio: {paired:.3f}")


if __name__ == "__main__":
    main()
