"""Load on loopback: 200 mixed requests from 8 concurrent clients, bounded in time.

Checks: no 5xx, no deadlock (everything answers within the time limit), the counters add up,
and host memory after the run stays within a bound of memory before it.

Memory bound: the service's RSS after the run, with the model loaded and after a light cleanup,
is at most ``RSS_BOUND`` above the RSS measured the same way before the run. The bound covers
what legitimately stays: the allocator's arenas of 8 worker threads, a resampling kernel cache
(bounded, 16 entries), the policy's 500-event history and the metrics. A leak of the audio or
of the model per request (~60 MB weights, ~100 kB audio) over 200 requests would exceed it.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

pytestmark = pytest.mark.slow

REQUESTS = 200
CLIENTS = 8
TIME_LIMIT_S = 150.0
RSS_BOUND = 96 * 2**20
TEXTS = ("Hi.", "Load test.", "One two three.", "Quick reply.", "Short one!", "Okay then.")


def settled_rss(client) -> int:
    """RSS with the model loaded, after a light cleanup (gc, malloc_trim)."""
    assert client.post("/v1/synthesize", json={"text": "Settle.", "seed": 1}).status_code == 200
    assert client.post("/v1/cleanup", json={"level": "light"}).status_code == 200
    return client.get("/v1/memory").json()["snapshot"]["host_rss_bytes"]


def plan(seed: int = 1234) -> list[tuple[str, str, dict | None]]:
    """A fixed, shuffled mix: synthesize 40%, memory 25%, metrics 25%, cleanup 10%."""
    rng = random.Random(seed)
    jobs: list[tuple[str, str, dict | None]] = []
    for i in range(REQUESTS):
        kind = i % 20
        if kind < 8:
            body = {"text": rng.choice(TEXTS), "seed": rng.randrange(1000),
                    "sample_rate": rng.choice([None, None, 24000])}
            jobs.append(("POST", "/v1/synthesize", body))
        elif kind < 13:
            jobs.append(("GET", "/v1/memory", None))
        elif kind < 18:
            jobs.append(("GET", "/metrics", None))
        else:
            level = "full" if i % 100 == 19 else "light"
            jobs.append(("POST", "/v1/cleanup", {"level": level}))
    rng.shuffle(jobs)
    return jobs


def test_mixed_load_has_no_5xx_no_deadlock_and_bounded_memory(service, client,
                                                              parse_metrics) -> None:
    before_rss = settled_rss(client)
    before = parse_metrics(client.get("/metrics").text)
    jobs = plan()
    results: list[tuple[str, int, float]] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + TIME_LIMIT_S

    def worker(share: list[tuple[str, str, dict | None]]) -> None:
        with service.client(timeout=60) as http:
            for method, path, body in share:
                if time.monotonic() > deadline:
                    with lock:
                        errors.append(f"time limit reached before {method} {path}")
                    return
                t0 = time.monotonic()
                try:
                    response = http.request(method, path, json=body)
                except Exception as exc:  # noqa: BLE001  (recorded and asserted below)
                    with lock:
                        errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    results.append((path, response.status_code, time.monotonic() - t0))

    threads = [threading.Thread(target=worker, args=(jobs[i::CLIENTS],), daemon=True)
               for i in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0) + 5)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "clients still waiting: deadlock?"
    assert not errors, errors
    assert len(results) == REQUESTS
    statuses = {status for _, status, _ in results}
    assert statuses <= {200, 429}, sorted(statuses)
    synth_ok = sum(1 for path, status, _ in results if path == "/v1/synthesize"
                   and status == 200)
    after = parse_metrics(client.get("/metrics").text)
    ok = ("glmtts_events_total", (("kind", "synthesis"), ("outcome", "ok")))
    assert after[ok] - before[ok] == synth_ok
    cleanups = sum(after[("glmtts_cleanups_total", (("level", lv),))]
                   - before[("glmtts_cleanups_total", (("level", lv),))]
                   for lv in ("light", "full"))
    assert cleanups == sum(1 for path, _, _ in results if path == "/v1/cleanup")
    after_rss = settled_rss(client)
    growth = after_rss - before_rss
    print(f"\n{REQUESTS} requests, {CLIENTS} clients: {elapsed:.1f} s; "
          f"{synth_ok} syntheses; RSS {before_rss / 2**20:.0f} -> {after_rss / 2**20:.0f} MiB")
    assert growth <= RSS_BOUND, f"RSS grew by {growth / 2**20:.0f} MiB"
