"""Memory-aware admission under a mixed load: the budget holds, and more budget buys throughput.

Two (or more) ``python -m glmtts serve --cpu --preload`` processes on free loopback ports, each
with its own ``--memory-budget`` (default ``512MiB`` and ``2GiB``), run the same mixed load:
the short and medium texts of ``bench._texts`` and the first two sentences of its long one
(37, 113 and 228 characters) in one fixed order, sent by ``--clients`` concurrent clients
(default 4) to ``POST /v1/synthesize``.

Before the load each server speaks eight of these texts, one after another, so that admission
predicts from measured history rather than from the fixed ``--unseen-peak`` guess (set to the
smallest budget, so that the guess too is admitted within every budget). Then its RSS is read
(the loaded model and what the warm-up left) and, during the load, read again every 5 ms. The
load runs in rounds that alternate between the servers, so that load from other processes on
a shared machine hits every budget alike; a server's throughput is its syntheses answered 200
over the seconds its rounds took.

Per budget it prints: syntheses per second; the server's CPU seconds (user and system) per
synthesis, the same work at every budget unless overlap costs more; the cores it kept busy
(CPU seconds over wall seconds: below the machine's cores when other work takes them, and then
no budget can buy throughput) and the cores everything else kept busy meanwhile (this bench's
clients and idle server included); the most syntheses
admitted at once; the most predicted bytes admitted at once (``/v1/memory``'s
``admission.max_admitted_bytes``: what the service allowed itself, warm-up included); and the
measured peak RSS above the loaded model during the load (the largest RSS read, minus the RSS
before: what the syntheses really took), both against the budget; and any refusal
(413/429) or error.

Threads: every server runs torch with ``--threads`` OpenMP threads (default 1). With one
thread, one synthesis keeps one core busy, so what a larger budget adds (a second synthesis
admitted beside the first) can use the second core of a 2-core machine; with two threads a
lone synthesis already spreads over both cores and admitting more only oversubscribes them
(and on cores shared with other work, libgomp's spinning threads made single runs vary
ten-fold, see ``bench/service_overhead.py``). So one thread measures what admission gives.

After that warm-up the predictions here were about 215-300 MiB per text (they vary from run to
run with what the first syntheses left in the heap), so a 512 MiB budget runs one synthesis
at a time, now and then two short ones (a run measured 0.98 at once on average), and 2 GiB
runs the four clients' requests side by side (3.3 at once). (Predictions grow while syntheses
overlap: on the CPU each one's measured peak includes the others'.) 384 MiB, which would
forbid every pair, refused a warm-up text (413) in one run of two.

Usage: python bench/admission.py [--budgets 512MiB,2GiB] [--clients N] [--rounds N] [--threads N]
Last line: ``ratio: X`` = throughput at the largest budget / throughput at the smallest.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
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
import psutil

from bench._texts import LONG as _LONG
from bench._texts import MEDIUM, SHORT
from bench.service_overhead import start_service, stop_service
from service.admission import parse_size

MIB = 2**20
#: The long text's first two sentences (228 characters): the whole one (632 characters) was
#: predicted at about 410 MiB here, and predictions that grow under overlap made it refused
#: (413) at a 512 MiB budget.
LONG = ". ".join(_LONG.split(". ")[:2]) + "."
#: One round of the mixed load (12 syntheses: 6 short, 3 medium, 3 long), in this order.
ROUND = (SHORT, LONG, SHORT, MEDIUM, SHORT, LONG, MEDIUM, SHORT, SHORT, LONG, MEDIUM, SHORT)
#: Stop starting new pairs of rounds past this many seconds (the run must end within 5 min).
TIME_LIMIT_S = 150.0


@dataclass
class Side:
    """One server and what its rounds measured."""

    budget: int
    proc: subprocess.Popen
    url: str
    client: httpx.Client
    baseline_rss: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    synthesis_s: float = 0.0  # the syntheses' own wall times, summed
    machine_cpu_s: float = 0.0  # CPU seconds of the whole machine during this side's rounds
    warm_refused: int = 0
    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    admission: dict = field(default_factory=dict)
    peak_rss: int = 0

    def post(self, text: str) -> tuple[int, float]:
        """Status and the synthesis's own wall time (``X-Wall-Seconds``; 0 when refused)."""
        try:
            answer = self.client.post("/v1/synthesize", json={"text": text, "seed": 3})
        except httpx.HTTPError:
            return -1, 0.0
        return answer.status_code, float(answer.headers.get("x-wall-seconds", 0.0))

    def round(self, clients: int) -> None:
        process = psutil.Process(self.proc.pid)
        cpu0, machine0 = sum(process.cpu_times()[:2]), _machine_busy()
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(self.post, ROUND))
        self.seconds += time.perf_counter() - t0
        self.cpu_s += sum(process.cpu_times()[:2]) - cpu0
        self.machine_cpu_s += _machine_busy() - machine0
        self.synthesis_s += sum(wall for _, wall in answers)
        codes = [code for code, _ in answers]
        for code in codes:
            self.statuses[code] = self.statuses.get(code, 0) + 1
        self.ok += codes.count(200)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core, every process)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(
        times, "softirq", 0.0) + getattr(times, "steal", 0.0)


PAGE = os.sysconf("SC_PAGE_SIZE")
#: How often the RSS of the servers is read during the load (``/proc/PID/statm``, ~10 us).
RSS_EVERY_S = 0.005


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


class RssWatch:
    """The largest RSS of each server, read every :data:`RSS_EVERY_S` by a thread (the
    server's own tracker resets the kernel's peak mark, ``VmHWM``, at each event, so that
    mark cannot span a load)."""

    def __init__(self, sides: list[Side]) -> None:
        self.sides = sides
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(RSS_EVERY_S):
            for side in self.sides:
                side.peak_rss = max(side.peak_rss, _rss(side.proc.pid))

    def __enter__(self) -> RssWatch:
        for side in self.sides:
            side.peak_rss = side.baseline_rss
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def _warm(side: Side) -> None:
    # the long one first (the --unseen-peak guess), so that later predictions interpolate:
    # a long text extrapolated from a line through short and medium ones was predicted at up
    # to 485 MiB. While the history is thin (under 5 syntheses) the policy widens its bound
    # by half, so a small budget may refuse (413) a warm-up text: it is sent again at the end
    refused = []
    for text in (LONG, SHORT, LONG, MEDIUM, SHORT, LONG, MEDIUM, SHORT):
        code, _ = side.post(text)
        if code == 413:
            refused.append(text)
        elif code != 200:
            raise SystemExit(f"warm-up at budget {side.budget / MIB:.0f} MiB answered {code}")
    side.warm_refused = len(refused)
    for text in refused:
        code, _ = side.post(text)
        if code != 200:
            raise SystemExit(f"warm-up at budget {side.budget / MIB:.0f} MiB answered {code} "
                             f"to a {len(text)}-character text after 8 syntheses: raise the "
                             f"smallest budget")
    side.baseline_rss = _rss(side.proc.pid)


def _stop(side: Side) -> None:
    side.client.close()
    stop_service(side.proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="512MiB,2GiB",
                        help="--memory-budget of each server, smallest first "
                             "(default 512MiB,2GiB)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--rounds", type=int, default=3,
                        help=f"rounds of {len(ROUND)} syntheses per budget (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each server (default 1, see above)")
    args = parser.parse_args()
    budgets = [parse_size(b) for b in args.budgets.split(",")]
    if len(budgets) < 2 or budgets != sorted(budgets):
        raise SystemExit("--budgets takes two or more sizes, smallest first")
    t_start = time.monotonic()
    load_before = os.getloadavg()[0]
    sides: list[Side] = []
    with tempfile.TemporaryDirectory(prefix="glmtts-bench-") as tmp:
        try:
            for i, budget in enumerate(budgets):
                proc, url = start_service(Path(tmp) / str(i), args.threads,
                                          ["--memory-budget", f"{budget}B", "--unseen-peak",
                                           f"{budgets[0]}B", "--idle-tiers", "off"])
                sides.append(Side(budget, proc, url, httpx.Client(base_url=url, timeout=300)))
            for side in sides:
                _warm(side)
            rounds = 0
            with RssWatch(sides):
                while rounds < args.rounds:
                    order = sides if rounds % 2 == 0 else sides[::-1]
                    for side in order:
                        side.round(args.clients)
                    rounds += 1
                    if time.monotonic() - t_start > TIME_LIMIT_S:
                        break
            for side in sides:
                side.admission = side.client.get("/v1/memory").json()["admission"]
        finally:
            for side in sides:
                _stop(side)
    print(f"workload: piper on CPU, {args.threads} torch thread(s) per server; {rounds} "
          f"round(s) of {len(ROUND)} syntheses (6 x {len(SHORT)}, 3 x {len(MEDIUM)}, "
          f"3 x {len(LONG)} characters) per budget from {args.clients} concurrent clients, "
          f"rounds alternating between the servers; total run "
          f"{time.monotonic() - t_start:.0f} s; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)")
    print(f"{'budget':>10} {'synth/s':>8} {'at once (mean)':>14} {'cpu s/synth':>11} "
          f"{'cores used':>10} {'others used':>11} {'answers':>16} "
          f"{'max at once':>11} "
          f"{'max admitted (predicted)':>25} {'peak RSS above model':>21}")
    exceeded = []
    for side in sides:
        adm = side.admission
        growth = side.peak_rss - side.baseline_rss
        answers = ", ".join(f"{n} x {code}" for code, n in sorted(side.statuses.items()))
        admitted = adm["max_admitted_bytes"]
        print(f"{side.budget / MIB:>6.0f} MiB {side.throughput:>8.3f} "
              f"{side.synthesis_s / side.seconds:>14.2f} "
              f"{side.cpu_s / max(1, side.ok):>11.3f} {side.cpu_s / side.seconds:>10.2f} "
              f"{(side.machine_cpu_s - side.cpu_s) / side.seconds:>11.2f} "
              f"{answers:>16} "
              f"{adm['max_admitted']:>11} "
              f"{admitted / MIB:>10.0f} MiB ({admitted / side.budget:>5.0%}) "
              f"{growth / MIB:>8.0f} MiB ({growth / side.budget:>5.0%})")
        if adm["max_admitted_bytes"] > side.budget or growth > side.budget:
            exceeded.append(side.budget)
    print("warm-up texts refused while the history was thin (sent again): "
          + ", ".join(f"{s.budget / MIB:.0f} MiB: {s.warm_refused}" for s in sides))
    print("budget exceeded: " + (", ".join(f"{b / MIB:.0f} MiB" for b in exceeded)
                                 if exceeded else "never (predicted or measured)"))
    print(f"ratio: {sides[-1].throughput / sides[0].throughput:.3f}")


if __name__ == "__main__":
    main()
