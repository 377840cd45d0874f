"""First paint: from a fresh server being ready to the Synthesize page's first idle state in a
real browser, against the same for a one-line Streamlit page, in one run.

Each repetition starts a fresh ``streamlit run`` (ours, then the one-line page, alternating the
order), waits for its health check, then times in Debian's Chromium (Playwright) from
``page.goto`` until the app reports that its script has finished (the page is drawn and idle):
what a user waits for the first time they open the app. Medians over the repetitions.

Usage: python bench/first_paint.py [--reps N]
Last line: ``ratio: X`` = our median / the one-line page's median (target <= 3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(script: Path, cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{script} did not start")


def _first_paint(browser, url: str) -> float:
    page = browser.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector(IDLE, timeout=180_000)
        page.get_by_test_id("stMain").wait_for()
        return time.perf_counter() - t0
    finally:
        page.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="first-paint-") as folder:
        plain = Path(folder) / "one_line.py"
        plain.write_text("import streamlit as st\nst.write('Hello.')\n")
        env = {**os.environ, "GLMTTS_DB": str(Path(folder) / "events.sqlite3")}
        apps = {"ours": (ROOT / "streamlit_app.py", ROOT), "one-line": (plain, Path(folder))}
        times: dict[str, list[float]] = {name: [] for name in apps}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            try:
                for rep in range(args.reps):
                    order = list(apps) if rep % 2 == 0 else list(apps)[::-1]
                    for name in order:
                        script, cwd = apps[name]
                        proc, url = _serve(script, cwd, env)
                        try:
                            seconds = _first_paint(browser, url)
                        finally:
                            proc.terminate()
                            proc.wait(30)
                        times[name].append(seconds)
                        print(f"rep {rep + 1} {name:>8}: {seconds:.2f} s", flush=True)
            finally:
                browser.close()
    ours, plain_s = (statistics.median(times[n]) for n in ("ours", "one-line"))
    print(f"median first paint: ours {ours:.2f} s, one-line page {plain_s:.2f} s")
    print(f"ratio: {ours / plain_s:.2f}")


if __name__ == "__main__":
    main()
