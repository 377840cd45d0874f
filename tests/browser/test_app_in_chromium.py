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
            # the whole file's download (a live player may come before it)
            expect(page.get_by_test_id("stDownloadButton")).to_be_visible(timeout=120_000)
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


def test_a_chinese_browser_gets_the_app_in_chinese(server: str) -> None:
    """A browser whose language is zh-CN opens the app in Simplified Chinese (Streamlit's
    ``st.context.locale``); the sidebar switches it to English. Screenshot:
    artifacts/synthesize-zh.png."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            context = browser.new_context(locale="zh-CN",
                                          viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(server)
            _idle(page)
            expect(page.get_by_role("heading", name="🔊 合成")).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="合成", exact=True).click()
            # the whole file's download (a live player may come before it)
            expect(page.get_by_test_id("stDownloadButton")).to_be_visible(timeout=120_000)
            _idle(page)
            expect(page.get_by_text("本次合成")).to_be_visible()
            expect(page.get_by_role("button", name="清理内存")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "synthesize-zh.png"), full_page=True)

            language = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(
                has=page.get_by_test_id("stWidgetLabel").get_by_text("Language / 语言"))
            expect(language.get_by_role("combobox")).to_have_value("简体中文")
            language.get_by_role("combobox").click()
            page.get_by_role("option", name="English", exact=True).click()
            _idle(page)
            expect(page.get_by_role("heading", name="🔊 Synthesize")).to_be_visible(
                timeout=30_000)
            expect(page.get_by_role("button", name="Clear memory")).to_be_visible()
        finally:
            browser.close()
