"""How well the cleanup policy predicts a synthesis's memory peak: the real engine, on CPU.

Runs the piper engine inside a real :class:`~glmtts.session.SynthesisSession` (tracker and
in-memory store) over 36 texts of 5 to 600 characters, built deterministically from a fixed list
of sentences and spoken in a fixed shuffled order. Before each synthesis it reads the store's
events and a snapshot, exactly as the policy gets them, and predicts the peak with
:func:`monitoring.policy.predict_peak` (the code :func:`~monitoring.policy.recommend` uses).

The figure predicted and measured is the **peak RSS level** of the process during the synthesis
(``VmHWM``, reset by the tracker when the synthesis starts), because that is what the policy's
CPU headroom check compares: the level the process will reach against the RSS it has now plus
the RAM the machine has available. Peak RSS *above the start* is not a usable target: glibc
keeps freed memory and serves later requests from it, so a short text after a long one rises
~0 bytes above its start (and a relative error over ~0 means nothing). The policy therefore
fits the demand above the post-load RSS, learned from syntheses that outgrew the pool, and
predicts the level as ``max(RSS now, post-load RSS + demand)``.

Because the level is dominated by what the process already holds, predicting "RSS now" alone is
already close; the table's last lines print that naive predictor's error too, and both errors
over only the syntheses whose peak rose above their start (where the fit does the work), so the
headline ratio can be read for what it is.

Torch runs one intra-op thread here (see ``main``), so that the run stays within a few minutes
on a busy 2-core machine.

The first ``SKIP`` syntheses are not scored (no or too little history to fit: the first one
also loads the model).

Usage: python bench/policy_prediction.py [--texts N]
Last line: ``ratio: X`` = median |predicted - measured| / measured over the scored syntheses.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from monitoring import open_store, take_snapshot
from monitoring.policy import history_from_frame, predict_peak

SKIP = 3
MIB = 1 << 20
SENTENCES = (
    "Yes.",
    "Hello there.",
    "The kettle is on.",
    "Please close the window before you leave.",
    "The quick brown fox jumps over the lazy dog while the old man watches from his porch.",
    "In the early years of the twentieth century, the small town by the river became a busy "
    "center of trade.",
    "Merchants arrived every week with cloth, salt and iron tools.",
    "Thank you.",
    "When the railway finally reached the valley, everything changed, and the boats grew "
    "fewer each season.",
    "Children gathered on the old stone bridge in the evenings to watch the boats drift "
    "slowly toward the sea.",
    "It rained all night.",
    "The market square filled with voices from dawn until dusk, and the smell of fresh bread "
    "drifted over the stalls.",
)


def _spoken(words: list[str], n: int) -> str:
    return " ".join(words[:n]).rstrip(",.;:") + "."


def build_texts(count: int) -> list[str]:
    """``count`` texts from 5 to 600 characters: half spaced evenly, half geometrically (many
    short ones, as people type them), in a fixed shuffled order."""
    half = count // 2
    lengths = [round(5 + (600 - 5) * k / (half - 1)) for k in range(half)]
    lengths += [round(5 * (600 / 5) ** (k / (count - half - 1))) for k in range(count - half)]
    random.Random(7).shuffle(lengths)
    texts = []
    for i, length in enumerate(lengths):
        words: list[str] = []
        k = (i * 5) % len(SENTENCES)
        while len(" ".join(words)) < length:
            words.extend(SENTENCES[k % len(SENTENCES)].split())
            k += 1
        n = len(words)
        while n > 1 and len(_spoken(words, n)) > length:
            n -= 1  # the longest word prefix that fits the length...
        if len(_spoken(words, n)) < 5:
            n += 1  # ...but at least 5 characters
        texts.append(_spoken(words, n))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=36)
    args = ap.parse_args()

    # One intra-op thread: on a small shared machine torch's spinning worker threads make a
    # synthesis 5-20x slower whenever another process wants the cores (memory is unaffected).
    torch.set_num_threads(1)
    store = open_store(":memory:")
    session = SynthesisSession(store=store, device="cpu", label="policy-bench")
    settings = session.policy_settings()
    t0 = time.perf_counter()
    rows = []
    print(f"{'#':>3} {'chars':>5} {'RSS now':>8} {'pred':>8} {'upper':>8} {'meas':>8} "
          f"{'err':>6} {'rose':>5}  (MiB; peak RSS level during the synthesis)")
    for i, text in enumerate(build_texts(args.texts)):
        request = SynthesisRequest(text=text, seed=i)
        history = history_from_frame(store.events(session_id=session.session_id))
        snapshot = take_snapshot()
        pending = session.pending(request)
        scored = session.synthesis_count >= SKIP
        pred = predict_peak(snapshot, history, pending, settings) if scored else None
        record = session.synthesize(request).record
        measured = record.peaks.host_rss_bytes
        before = record.before.host_rss_bytes
        assert measured is not None and before is not None
        rose = measured - before > settings.cpu_censor_bytes
        if pred is None or pred.level_bytes is None:
            print(f"{i:3d} {len(request.text):5d} {before / MIB:8.1f} {'-':>8} {'-':>8} "
                  f"{measured / MIB:8.1f} {'-':>6} {'yes' if rose else 'no':>5}")
            continue
        err = abs(pred.level_bytes - measured) / measured
        naive = abs(snapshot.host_rss_bytes - measured) / measured
        rows.append((err, naive, rose, measured <= (pred.level_upper_bytes or 0)))
        print(f"{i:3d} {len(request.text):5d} {before / MIB:8.1f} {pred.level_bytes / MIB:8.1f} "
              f"{(pred.level_upper_bytes or 0) / MIB:8.1f} {measured / MIB:8.1f} {err:6.1%} "
              f"{'yes' if rose else 'no':>5}")
    errors = [r[0] for r in rows]
    risen = [r for r in rows if r[2]]
    print(f"elapsed {time.perf_counter() - t0:.1f} s; first {SKIP} syntheses not scored "
          f"(no or too little history); {len(rows)} scored")
    print(f"median error: policy {statistics.median(errors):.2%}, naive 'RSS now' "
          f"{statistics.median(r[1] for r in rows):.2%}")
    if risen:
        print(f"over the {len(risen)} whose peak rose above their start: policy "
              f"{statistics.median(r[0] for r in risen):.2%}, naive "
              f"{statistics.median(r[1] for r in risen):.2%}")
    print(f"upper bound >= measured in {sum(r[3] for r in rows)}/{len(rows)}")
    print(f"ratio: {statistics.median(errors):.4f}")


if __name__ == "__main__":
    main()
