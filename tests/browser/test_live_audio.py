"""In a real browser (Debian's Chromium, Playwright, ``streamlit run``): the Synthesize page
starts playing while the later sentences are still being made. The live player appears, and
plays, while the script still runs (an order of events, not a time: the text has 30
sentences, the first one plays long before the last is made); at the end the live player holds
the rest of the whole audio (its samples are the whole file's last ones) and the whole file is
below it. Idle tiers are on meanwhile, so the sidebar's countdown fragment reruns every
second during the synthesis without disturbing it."""

from __future__ import annotations

import io
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.browser.test_app_in_chromium import ARTIFACTS, CHROMIUM, FLAGS, _idle, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed "
                                        "(scripts/run-tests.sh installs it)")]

TEXT = " ".join(f"Sentence {i} is here, and it is spoken as soon as it is made."
                for i in range(1, 31))
RUNNING = "[data-testid='stApp'][data-test-script-state='running']"


def _samples(url: str, src: str) -> np.ndarray:
    with urllib.request.urlopen(urllib.parse.urljoin(url + "/", src), timeout=30) as answer:
        data, _ = sf.read(io.BytesIO(answer.read()), dtype="int16")
    return data


def test_the_first_sentences_play_before_the_last_is_made(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with running_app(tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            _idle(page)
            # idle tiers on: the sidebar's countdown redraws every second during the run
            tiers = page.get_by_label("Idle release (seconds)", exact=True)
            expect(tiers).to_have_value("off")  # the default
            tiers.fill("300,900,3600")
            tiers.press("Enter")
            _idle(page)
            box = page.get_by_label("Text to speak")
            box.fill(TEXT)
            box.press("Control+Enter")
            _idle(page)
            page.get_by_role("button", name="Synthesize").click()
            # the live player exists and plays while the run is still making sentences
            page.wait_for_function(
                "() => [...document.querySelectorAll('audio')].some(a => !a.paused)",
                timeout=180_000)
            assert page.locator(RUNNING).count() == 1
            progress = page.get_by_test_id("stProgress").inner_text()
            assert "of 30 made" in progress, progress
            page.screenshot(path=str(ARTIFACTS / "synthesize-live.png"), full_page=True)
            _idle(page)
            expect(page.get_by_text("Live player: the first sentence was ready to play")
                   ).to_be_visible()
            expect(page.get_by_text("All 30 sentence(s) made")).to_be_visible()
            expect(page.get_by_text("Time to first audio:")).to_be_visible()
            expect(page.get_by_text("Next: light cleanup in")).to_be_visible()
            live, whole = (page.locator("audio").nth(i).get_attribute("src") for i in (0, 1))
            assert live != whole
            live_samples, whole_samples = _samples(url, live), _samples(url, whole)
            assert 0 < len(live_samples) < len(whole_samples)
            assert np.array_equal(live_samples, whole_samples[-len(live_samples):])
        finally:
            browser.close()
