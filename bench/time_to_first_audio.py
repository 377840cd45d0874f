"""Time to first audio: a streamed speech request against the same request answered whole.

Both sides send the same ~600-character text (``bench._texts.LONG``, four sentences) with the
same seed to ``POST /v1/audio/speech`` of one ``python -m glmtts serve --cpu --preload`` on a
free loopback port, ``response_format: pcm``:

- streamed (``stream_format: audio``): the time from sending the request to the first audio
  bytes received (httpx streaming); the rest of the stream is then read, untimed, so the next
  request finds the device free;
- whole (no ``stream_format``): the time from sending the request to the last byte of the file.

Each repetition runs one of each back to back, the order alternating, so that load from other
processes hits both sides alike; after warm-up runs on both sides it reports both medians.
The server runs torch with ``--threads`` intra-op threads (default 1, as the other service
benchmarks: on shared cores two OpenMP threads make single runs vary ten-fold).

Usage: python bench/time_to_first_audio.py [--reps N] [--warmup N] [--threads N]
Last line: ``ratio: X`` = median time to first streamed audio / median time to the whole file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

from bench._texts import LONG
from bench.service_overhead import start_service, stop_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="measured pairs (default 9)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs per side")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of the server (default 1)")
    args = parser.parse_args()
    body = {"model": "piper", "voice": "alloy", "input": LONG, "response_format": "pcm",
            "seed": 7}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="glmtts-bench-") as tmp:
        proc, url = start_service(Path(tmp), args.threads)
        client = httpx.Client(base_url=url, timeout=300)
        try:
            def streamed() -> tuple[float, int]:
                t0 = time.perf_counter()
                first = None
                size = 0
                with client.stream("POST", "/v1/audio/speech",
                                   json={**body, "stream_format": "audio"}) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes():
                        if chunk and first is None:
                            first = time.perf_counter() - t0
                        size += len(chunk)
                assert first is not None, "the stream carried no audio"
                return first, size

            def whole() -> tuple[float, int]:
                t0 = time.perf_counter()
                response = client.post("/v1/audio/speech", json=body)
                response.raise_for_status()
                size = len(response.content)
                return time.perf_counter() - t0, size

            for _ in range(args.warmup):
                streamed()
                whole()
            first_s, whole_s = [], []
            sizes = set()
            for rep in range(args.reps):
                pair = (streamed, whole) if rep % 2 == 0 else (whole, streamed)
                for side in pair:
                    seconds, size = side()
                    (first_s if side is streamed else whole_s).append(seconds)
                    sizes.add(size)
        finally:
            client.close()
            stop_service(proc)
    if len(sizes) != 1:
        raise SystemExit(f"the two sides sent different audio: {sorted(sizes)} bytes")
    audio_s = sizes.pop() / 2 / 24000
    first, full = statistics.median(first_s), statistics.median(whole_s)
    print(f"workload: piper on CPU ({args.threads} torch thread(s)), {len(LONG)} characters "
          f"-> {audio_s:.2f} s of 24 kHz pcm; {args.reps} alternating pairs after "
          f"{args.warmup} warm-up runs per side")
    print(f"streamed, first audio: median {first:.3f} s (min {min(first_s):.3f}, "
          f"max {max(first_s):.3f})")
    print(f"whole file:            median {full:.3f} s (min {min(whole_s):.3f}, "
          f"max {max(whole_s):.3f})")
    print(f"total run {time.monotonic() - t_start:.0f} s; service exit code {proc.returncode}")
    print(f"ratio: {first / full:.3f}")


if __name__ == "__main__":
    main()
