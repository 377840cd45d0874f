"""The main path in a real browser: Debian's Chromium driven by Playwright against a
``streamlit run`` of the app on a free loopback port. Screenshots go to ``artifacts/``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed "
                                        "(scripts/run-tests.sh installs it)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(workdir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``streamlit run`` of the app on a free loopback port, with its own event store in
    ``workdir`` (and ``env`` added); yields the URL once the health check answers, stops the
    server after."""
    port = _free_port()
    env = {**os.environ, "GLMTTS_DB": str(workdir / "events.sqlite3"), **(env or {})}
    log_path = workdir / "streamlit.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
             "--server.headless", "true", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start: see {log_path}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_app(tmp_path_factory.mktemp("app")) as url:
        yield url


def _idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                           timeout=120_000)


def test_type_synthesize_monitor_cleanup(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            _idle(page)
            text = "Hello from a real browser. The memory card shows what this cost."
            box = page.get_by_label("Text to speak")
            box.fill(text)
            box.press("Control+Enter")
            page.get_by_role("button", name="Synthesize").click()
            expect(page.locator("audio")).to_have_count(1, timeout=120_000)
            _idle(page)
            expect(page.get_by_text("This synthesis")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "synthesize.png"), full_page=True)

            page.get_by_role("link", name="Monitor").click()
            _idle(page)
            legend = page.locator(".js-plotly-plot .legendtext", has_text="synthesis (")
            expect(legend.first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "monitor.png"), full_page=True)

            page.get_by_role("button", name="Clear memory").click()
            _idle(page)
            expect(page.get_by_text("Full cleanup freed")).to_be_visible(timeout=30_000)
            page.get_by_role("link", name="Synthesize").click()
            _idle(page)
            try:
                expect(page.get_by_label("Text to speak")).to_have_value(text, timeout=30_000)
            finally:
                page.screenshot(path=str(ARTIFACTS / "after-cleanup.png"), full_page=True)
        finally:
            browser.close()
