"""Real-time factor of our PyTorch Piper engine against onnxruntime running the same voice.

Both sides run with their default thread counts and do the same work per text: espeak-ng
phonemes per sentence (our phonemizer, which matches Piper's), one network run per sentence
with the voice's default noise scales, and the sentences joined with pauses. Runs are
interleaved (ours, ORT, ours, ...) so machine noise hits both alike; each side gets one
warm-up call. RTF = compute seconds / seconds of audio. Per text, each side's time and audio
length are the medians over the repetitions (a burst of other work on this small machine hits
one call, not the figure); the overall RTF sums those medians over the texts. The plain means
are printed too. Last line: ``ratio: ours / ORT`` (of the median-based RTFs).

Usage: python bench/engine_rtf.py [--reps N] [--cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._texts import TEXTS
from glmtts.audio import join_with_pauses
from glmtts.engines import create_engine
from glmtts.engines.piper import SENTENCE_PAUSE_S, PiperEngine, phonemes
from glmtts.request import SynthesisRequest


class OrtPiper:
    """The same voice run by onnxruntime (the reference implementation's runtime)."""

    def __init__(self, engine: PiperEngine) -> None:
        import onnxruntime as ort

        self.cfg = engine.config
        opts = ort.SessionOptions()
        # Idle ORT worker threads spin-wait by default; on a small machine that steals the
        # cores from the run that follows (ours), so the comparison turns it off.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(engine.voice_path), opts,
                                            providers=["CPUExecutionProvider"])
        self.scales = np.array([self.cfg.noise_scale, self.cfg.length_scale, self.cfg.noise_w],
                               dtype=np.float32)

    def synthesize(self, text: str) -> np.ndarray:
        chunks = []
        for sent in phonemes.sentences(text, self.cfg.espeak_voice, self.cfg.id_map):
            ids = np.array([sent.ids], dtype=np.int64)
            out = self.session.run(None, {"input": ids,
                                          "input_lengths": np.array([ids.shape[1]]),
                                          "scales": self.scales})[0]
            chunks.append(out.reshape(-1).astype(np.float32))
        return join_with_pauses(chunks, [SENTENCE_PAUSE_S] * len(chunks), self.cfg.sample_rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--cpu", action="store_true", help="force our engine onto the CPU")
    args = ap.parse_args()

    engine = create_engine("piper")
    t0 = time.perf_counter()
    engine.load("cpu" if args.cpu else "auto")
    load_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ort = OrtPiper(engine)
    load_ort = time.perf_counter() - t0
    print(f"device: {engine.device}; load: ours {load_ours:.2f} s, onnxruntime {load_ort:.2f} s")
    sr = engine.config.sample_rate
    engine.synthesize(SynthesisRequest(text="Warm up, please.", seed=0))
    ort.synthesize("Warm up, please.")

    runs: dict[tuple[str, str], list[tuple[float, float]]] = {
        (name, side): [] for name in TEXTS for side in ("ours", "ort")}
    for rep in range(args.reps):
        for name, text in TEXTS.items():
            t = time.perf_counter()
            res = engine.synthesize(SynthesisRequest(text=text, seed=rep))
            runs[name, "ours"].append((time.perf_counter() - t, res.duration_s))
            t = time.perf_counter()
            audio = ort.synthesize(text)
            runs[name, "ort"].append((time.perf_counter() - t, len(audio) / sr))

    def by_median(rows: list[tuple[float, float]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    def by_mean(rows: list[tuple[float, float]], i: int) -> float:
        return statistics.fmean(r[i] for r in rows)

    print(f"{'text':8} {'chars':>5} {'ours s':>8} {'ORT s':>8} {'ours RTF':>9} {'ORT RTF':>8}"
          "   (medians of the repetitions)")
    for name, text in TEXTS.items():
        o, r = ((by_median(runs[name, side], 0), by_median(runs[name, side], 1))
                for side in ("ours", "ort"))
        print(f"{name:8} {len(text):5d} {o[0]:8.3f} {r[0]:8.3f} {o[0] / o[1]:9.4f} "
              f"{r[0] / r[1]:8.4f}")

    def rtf(side: str, pick: Callable[[list[tuple[float, float]], int], float]) -> float:
        return (sum(pick(runs[n, side], 0) for n in TEXTS)
                / sum(pick(runs[n, side], 1) for n in TEXTS))

    print(f"means: RTF ours {rtf('ours', by_mean):.4f}, onnxruntime {rtf('ort', by_mean):.4f}, "
          f"ratio {rtf('ours', by_mean) / rtf('ort', by_mean):.3f}")
    rtf_ours, rtf_ort = rtf("ours", by_median), rtf("ort", by_median)
    print(f"overall RTF (medians): ours {rtf_ours:.4f}, onnxruntime {rtf_ort:.4f}")
    print(f"ratio: {rtf_ours / rtf_ort:.3f}")


if __name__ == "__main__":
    main()
