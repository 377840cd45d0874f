"""Hostile but realistic clients and store faults against real processes on loopback.

1. A service (``python -m glmtts serve --cpu``, its own SQLite file, a token) meets every
   hostile request of the reliability issue: an audio bomb (a 0.95 MB FLAC declaring 600 s of
   8-channel 192 kHz audio), JSON nested 100,000 deep, 5,000-digit numbers, lone surrogates,
   oversized bodies, broken multipart, an upload aborted half way, wrong and lower-case auth
   schemes, HEAD, a client that leaves during a long synthesis, a request head sent a byte at a
   time, a body that stalls. Each answer's status is recorded: none may be 5xx.
2. While 16 clients from another address trickle request bodies and 16 more trickle request
   heads, ordinary requests are sent: every one must be answered 200.
3. The server's log is searched for tracebacks after it stops (none may appear), and its store
   for the synthesis events the requests above must have left.
4. A 20-line batch (``python -m glmtts batch``) runs while another process holds the store's
   write lock for 10 s, and a 10-line batch starts while the lock is already held: no event may
   be lost, and neither batch may fall back to keeping its events in memory.

Prints each figure; last line ``ratio: X`` = events stored / events expected (must be 1.0).
The server's RSS increase while it refuses the audio bomb is printed too (must stay < 100 MiB).

Usage: python bench/hostile.py [--quick] (--quick: a 120 s bomb and a 4 s lock)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import numpy as np
import psutil
import soundfile as sf

TOKEN = "hostile-bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READY_TIMEOUT_S = 120.0
BOUNDARY = "hostileboundary"
#: Clients of the slow-client round come from this loopback address: another "machine".
SLOW_ADDRESS = "127.0.0.2"


@dataclass
class Report:
    """What one run found."""

    answers: dict[str, int | str] = field(default_factory=dict)
    bomb_rss_increase: int = 0
    normal_sent: int = 0
    normal_ok: int = 0
    tracebacks: int = 0
    events_expected: int = 0
    events_stored: int = 0
    batch_expected: int = 0
    batch_stored: int = 0
    lock_held_s: float = 0.0

    @property
    def server_errors(self) -> list[str]:
        return [k for k, v in self.answers.items() if isinstance(v, int) and v >= 500]

    @property
    def ratio(self) -> float:
        expected = self.events_expected + self.batch_expected
        return (self.events_stored + self.batch_stored) / expected if expected else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(db: Path) -> dict[str, str]:
    env = {**os.environ, "GLMTTS_DB": str(db), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("GLMTTS_TOKEN", None)
    return env


def bomb_flac(path: Path, seconds: int) -> bytes:
    """A FLAC of ``seconds`` of 8-channel 192 kHz silence (0.95 MB for 600 s), written in
    blocks (never held whole)."""
    if not path.exists():
        block = np.zeros((192_000 * 5, 8), dtype=np.int16)
        with sf.SoundFile(path, "w", samplerate=192_000, channels=8, format="FLAC",
                          subtype="PCM_16") as out:
            for _ in range(seconds // 5):
                out.write(block)
    return path.read_bytes()


def _wav(seconds: float = 3.0, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0))


def _status(sock: socket.socket) -> int | str:
    """The status code the server sends on ``sock`` (or ``closed``), reading until it closes."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    sock.close()
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "closed"


def _stalled_body(url: str, source: str) -> socket.socket:
    sock = _connect(url, source)
    sock.sendall((f"POST /v1/synthesize HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
                  f"\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                  f"Content-Length: 600000\r\n\r\n--{BOUNDARY}\r\nContent-Disposition: "
                  f'form-data; name="text"\r\n\r\nHi').encode())
    return sock


def _trickled_head(url: str, source: str, stop: threading.Event) -> socket.socket:
    sock = _connect(url, source)

    def trickle() -> None:
        head = f"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 200}".encode()
        for byte in head:
            if stop.wait(0.5):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    return sock


class Server:
    """``python -m glmtts serve`` on a free loopback port, its own store and log."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.db = folder / "service.sqlite3"
        self.log = folder / "service.log"
        self.url = f"http://127.0.0.1:{_free_port()}"
        port = self.url.rsplit(":", 1)[1]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "glmtts", "serve", "--cpu", "--port", port, "--token",
                 TOKEN, "--preload", *args], cwd=ROOT, env=_env(self.db), stdout=out,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2,
                             headers=AUTH).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers=AUTH)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def hostile_requests(server: Server, report: Report, work: Path, bomb_seconds: int) -> int:
    """Send every hostile request; record each status in ``report``. Returns how many
    syntheses must have left an event (ok or cancelled)."""
    syntheses = 0
    answers = report.answers
    bomb = bomb_flac(work / f"bomb-{bomb_seconds}s.flac", bomb_seconds)
    with server.client() as client:
        process = psutil.Process(server.proc.pid)
        base = process.memory_info().rss
        peak = base
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.wait(0.01):
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, process.memory_info().rss)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        answers["audio bomb (FLAC, 8 ch, 192 kHz)"] = client.post(
            "/v1/synthesize", data={"text": "Hi."},
            files={"reference_audio": ("bomb.flac", bomb, "audio/flac")}).status_code
        done.set()
        watcher.join()
        report.bomb_rss_increase = peak - base

        def raw(name: str, body: bytes, path: str = "/v1/synthesize",
                content_type: str = "application/json", **headers: str) -> None:
            nonlocal syntheses
            answers[name] = client.post(path, content=body, headers={
                "content-type": content_type, **headers}).status_code
            syntheses += path == "/v1/synthesize" and answers[name] == 200  # e.g. NUL dropped

        raw("JSON nested 100,000 deep ([)", b"[" * 100_000)
        raw("JSON nested 40,000 deep ({)", b'{"a":' * 40_000)
        raw("5,000-digit seed", b'{"text": "Hi.", "seed": ' + b"9" * 5000 + b"}")
        raw("5,000-digit sample rate", b'{"text": "Hi.", "sample_rate": ' + b"1" * 5000 + b"}")
        raw("5,000-digit cleanup level", b'{"level": ' + b"7" * 5000 + b"}", "/v1/cleanup")
        raw("lone surrogate key", b'{"\\ud800": 1}')
        raw("invalid UTF-8", b'{"text": "\xff\xfe"}')
        raw("not JSON", b"{not json")
        raw("JSON body over the limit", b'{"text": "' + b"a" * 300_000 + b'"}')
        raw("text/plain body", b"hello", content_type="text/plain")
        raw("multipart without boundary", b"hello", content_type="multipart/form-data")
        raw("broken multipart", b"--x\r\nbroken", content_type="multipart/form-data; boundary=x")
        raw("NUL in text", b'{"text": "Hi\\u0000there."}')
        raw("text over the limit", json.dumps({"text": "a" * 100_000}).encode())
        answers["upload over the limit"] = client.post(
            "/v1/synthesize", data={"text": "Hi."},
            files={"reference_audio": ("x.wav", b"\0" * (17 * 2**20), "audio/wav")}).status_code
        answers["reference that is not audio"] = client.post(
            "/v1/synthesize", data={"text": "Hi."},
            files={"reference_audio": ("x.wav", b"RIFF not audio", "audio/wav")}).status_code
        answers["unknown field"] = client.post("/v1/synthesize", json={
            "text": "Hi.", "colour": "blue"}).status_code
        answers["path in the URL"] = client.get("/v1/../../etc/passwd").status_code
        answers["HEAD /v1/health"] = client.head("/v1/health").status_code
        answers["wrong token"] = httpx.get(f"{server.url}/v1/memory", headers={
            "Authorization": "Bearer nope"}).status_code
        answers["lower-case bearer"] = httpx.get(f"{server.url}/v1/memory", headers={
            "Authorization": f"bearer {TOKEN}"}).status_code
        ok = client.post("/v1/synthesize", json={"text": "A normal request.", "seed": 1})
        answers["normal synthesis"] = ok.status_code
        syntheses += ok.status_code == 200
        answers["clone with a 3 s reference"] = client.post(
            "/v1/synthesize", data={"text": "Cloned."},
            files={"reference_audio": ("r.wav", _wav(), "audio/wav")}).status_code
        syntheses += answers["clone with a 3 s reference"] == 200

    sock = _connect(server.url)  # an upload aborted half way
    sock.sendall((f"POST /v1/synthesize HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                  f"Content-Length: 600000\r\n\r\n").encode() + b"x" * 1000)
    sock.close()
    answers["upload aborted half way"] = "closed"

    text = " ".join(f"This is sentence number {i} of a text nobody will hear." for i in range(40))
    with contextlib.suppress(httpx.ReadTimeout), server.client(timeout=1.5) as client:
        answers["client leaves a long synthesis"] = client.post(
            "/v1/synthesize", json={"text": text, "seed": 1}).status_code
    answers.setdefault("client leaves a long synthesis", "left")
    syntheses += 1  # cancelled at the next sentence, recorded as cancelled
    return syntheses


def slow_clients(server: Server, report: Report, normal: int = 6) -> int:
    """16 stalled bodies and 16 trickled heads from another address; ``normal`` ordinary
    syntheses meanwhile. Returns the syntheses that must have left an event."""
    stop = threading.Event()
    bodies = [_stalled_body(server.url, SLOW_ADDRESS) for _ in range(16)]
    heads = [_trickled_head(server.url, SLOW_ADDRESS, stop) for _ in range(16)]
    time.sleep(0.5)
    with server.client() as client:
        for i in range(normal):
            report.normal_sent += 1
            answer = client.post("/v1/synthesize", json={"text": f"Served {i}.", "seed": 1})
            report.normal_ok += answer.status_code == 200
    for i, sock in enumerate(bodies):
        report.answers[f"stalled body {i + 1}"] = _status(sock)
    for i, sock in enumerate(heads):
        report.answers[f"trickled head {i + 1}"] = _status(sock)
    stop.set()
    return report.normal_ok


def _count_syntheses(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'synthesis'").fetchone()[0]


def _hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process that takes the store's write lock and keeps it ``seconds``; it prints
    how long it held it. Its first line (``locked``) says the lock is taken."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); t0 = time.monotonic(); print('locked', flush=True)\n"
         "time.sleep(float(sys.argv[2])); c.execute('COMMIT')\n"
         "print(time.monotonic() - t0)", str(db), str(seconds)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    holder.stdout.readline()
    return holder


def locked_batch(work: Path, report: Report, lock_s: float, lines: int = 20,
                 at_start: bool = False) -> None:
    """A batch whose store another process locks for ``lock_s`` seconds once its first line
    has run (or, ``at_start``, before the batch even opens the store)."""
    work.mkdir(parents=True, exist_ok=True)
    db = work / "batch.sqlite3"
    if at_start:  # the store exists (this app's schema) and is locked when the batch starts
        subprocess.run([sys.executable, "-c", "import sys; from monitoring import open_store; "
                        "open_store(sys.argv[1]).close()", str(db)], cwd=ROOT, check=True)
    tasks = work / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"uttid": f"u{i:02d}", "syn_text": f"Line number {i}.",
                                         "seed": i}) + "\n" for i in range(lines)))
    report.batch_expected += lines
    holder = _hold_lock(db, lock_s) if at_start else None
    proc = subprocess.Popen([sys.executable, "-m", "glmtts", "batch", str(tasks), "-o",
                             str(work / "out"), "--cpu"], cwd=ROOT, env=_env(db),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:  # the first line ran: lock the store now
        seen += line
        if holder is None and re.match(r"\[\s*1/", line):
            holder = _hold_lock(db, lock_s)
    code = proc.wait(300)
    if holder is None:
        raise RuntimeError(f"the batch never reported its first line:\n{seen}")
    held, _ = holder.communicate(timeout=120)
    report.lock_held_s = min(report.lock_held_s or lock_s, float(held or 0.0))
    if code != 0 or "kept in memory" in seen:
        raise RuntimeError(f"the batch failed ({code}) or kept its events in memory:\n{seen}")
    report.batch_stored += _count_syntheses(db)


def run(work: Path, *, bomb_seconds: int = 600, lock_s: float = 10.0, batch_lines: int = 20,
        normal: int = 6, server_args: tuple[str, ...] = ()) -> Report:
    """Everything above; the report of one run (``server_args``: more ``serve`` options)."""
    report = Report()
    server = Server(work, *server_args)
    try:
        report.events_expected += hostile_requests(server, report, work, bomb_seconds)
        report.events_expected += slow_clients(server, report, normal)
    finally:
        code = server.stop()
    report.answers["service exit code"] = code
    log = server.log.read_text(errors="replace")
    report.tracebacks = log.count("Traceback")
    report.events_stored = _count_syntheses(server.db)
    locked_batch(work / "lock-during", report, lock_s, lines=batch_lines)
    locked_batch(work / "lock-at-start", report, lock_s, lines=batch_lines // 2, at_start=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="120 s bomb, 4 s lock")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
        report = run(Path(folder), bomb_seconds=120 if args.quick else 600,
                     lock_s=4.0 if args.quick else 10.0)
    width = max(len(k) for k in report.answers)
    for name, status in report.answers.items():
        print(f"  {name:<{width}}  {status}")
    print(f"cases tried: {len(report.answers)}; 5xx answers: {len(report.server_errors)} "
          f"{report.server_errors}")
    print(f"tracebacks in the server log: {report.tracebacks}")
    print(f"server RSS increase while refusing the audio bomb: "
          f"{report.bomb_rss_increase / 2**20:.1f} MiB (must stay under 100 MiB)")
    print(f"normal requests answered while 32 slow clients trickled: "
          f"{report.normal_ok} of {report.normal_sent}")
    print(f"service synthesis events stored: {report.events_stored} of "
          f"{report.events_expected}")
    print(f"batch events stored with the store locked {report.lock_held_s:.1f} s (during a "
          f"20-line batch, and from before a 10-line batch starts): "
          f"{report.batch_stored} of {report.batch_expected} (lost: "
          f"{report.batch_expected - report.batch_stored})")
    print(f"ratio: {report.ratio:.3f}")


if __name__ == "__main__":
    main()
