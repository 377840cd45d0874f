"""What the HTTP service adds to one synthesis: ``POST /v1/synthesize`` against a direct call.

Both sides do the same work with the same configuration: the piper engine on the CPU inside a
:class:`~glmtts.session.SynthesisSession` with a SQLite store (file) and a 10 Hz sampler, one
sentence with a fixed seed (same audio every time), and the audio encoded as WAV.

- direct: ``session.synthesize(request)`` then ``wav_bytes(...)`` in this process, run the way
  the service runs it: on an AnyIO worker thread of an asyncio loop (``anyio.to_thread``, what
  Starlette's ``run_in_threadpool`` uses). On a busy machine torch's OpenMP threads behave very
  differently depending on which thread drives them (one long-lived thread measured 2-10x slower
  than AnyIO's workers here, libgomp spinning), so calling from another kind of thread would
  measure threading, not HTTP;
- HTTP: the same request as JSON to ``python -m glmtts serve --cpu`` (a subprocess on a free
  loopback port), timed from the client: request, validation, synthesis, WAV, record headers,
  metrics, response transfer.

Both sides use the same number of torch intra-op threads (``--threads``, default 1; the server
gets ``OMP_NUM_THREADS``). On a machine whose cores other processes also use, OpenMP with two
threads made the very same synthesis take 0.3 s or 7 s from one run to the next (libgomp
threads spinning at barriers while their partner waits for a core), which drowns the few
milliseconds HTTP costs; one thread made it steady.

Each repetition runs one of each back to back, the order alternating, so that load from other
processes hits both sides of a pair alike. After warm-up runs on both sides, it reports each
side's median and the median over repetitions of (HTTP / direct).

Usage: python bench/service_overhead.py [--reps N] [--threads N] [--text TEXT]
Last line: ``ratio: X`` = median of the per-repetition ratios HTTP time / direct time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio.to_thread
import httpx
import torch

from bench._texts import MEDIUM
from glmtts.audio import wav_bytes
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from monitoring import Sampler, open_store

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_service(proc: subprocess.Popen) -> None:
    """SIGTERM (the service's clean shutdown), then a kill if it has not ended in 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_service(folder: Path, threads: int, extra: Sequence[str] = ()
                  ) -> tuple[subprocess.Popen, str]:
    """A ``serve --cpu --preload`` process on a free loopback port (its own store in
    ``folder``, torch on ``threads`` threads, ``extra`` serve options); return it and its URL
    once its model is loaded."""
    port = free_port()
    env = {**os.environ, "GLMTTS_DB": str(folder / "service.sqlite3"),
           "OMP_NUM_THREADS": str(threads)}
    env.pop("GLMTTS_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "glmtts", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--cpu", "--preload", *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).json().get("loaded"):
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the service did not start in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=21, help="measured pairs (default 21)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs per side")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on both sides (default 1)")
    parser.add_argument("--text", default=MEDIUM)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    body = {"text": args.text, "seed": 7}
    request = SynthesisRequest(text=args.text, seed=7)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="glmtts-bench-") as tmp:
        folder = Path(tmp)
        proc, url = start_service(folder, args.threads)
        store = open_store(folder / "direct.sqlite3")
        sampler = Sampler(store=store, session_id=store.start_session("bench")).start()
        session = SynthesisSession("piper", device="cpu", store=store, sampler=sampler,
                                   label="direct")
        client = httpx.Client(base_url=url, timeout=120)
        loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=loop.run_forever, name="direct-loop", daemon=True)
        loop_thread.start()
        try:
            def direct_work() -> None:
                outcome = session.synthesize(request)
                wav_bytes(outcome.result.audio, outcome.result.sample_rate)

            def direct() -> float:
                t0 = time.perf_counter()
                asyncio.run_coroutine_threadsafe(anyio.to_thread.run_sync(direct_work),
                                                 loop).result()
                return time.perf_counter() - t0

            def http() -> float:
                t0 = time.perf_counter()
                response = client.post("/v1/synthesize", json=body)
                response.raise_for_status()
                _ = response.content
                return time.perf_counter() - t0

            for _ in range(args.warmup):
                direct()
                http()
            direct_s, http_s, ratios = [], [], []
            for rep in range(args.reps):
                if rep % 2 == 0:
                    d = direct()
                    h = http()
                else:
                    h = http()
                    d = direct()
                direct_s.append(d)
                http_s.append(h)
                ratios.append(h / d)
            audio_s = float(client.post("/v1/synthesize", json=body).headers["x-audio-seconds"])
        finally:
            loop.call_soon_threadsafe(loop.stop)
            loop_thread.join(10)
            client.close()
            session.close()
            sampler.stop()
            store.close()
            stop_service(proc)
    print(f"workload: piper on CPU ({args.threads} torch thread(s) per side), "
          f"{len(args.text)} characters -> {audio_s:.2f} s of audio; {args.reps} interleaved "
          f"pairs after {args.warmup} warm-up runs per side")
    print(f"direct session call: median {statistics.median(direct_s) * 1000:.1f} ms "
          f"(min {min(direct_s) * 1000:.1f})")
    print(f"HTTP /v1/synthesize: median {statistics.median(http_s) * 1000:.1f} ms "
          f"(min {min(http_s) * 1000:.1f})")
    print(f"median HTTP overhead: "
          f"{(statistics.median(http_s) - statistics.median(direct_s)) * 1000:.1f} ms; "
          f"total run {time.monotonic() - t_start:.0f} s; service exit code {proc.returncode}")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
