"""Regenerate the README's screenshots: start the app, speak three texts of growing length,
clean up once, and capture the Synthesize and Monitor pages into docs/screenshots/, and the
Synthesize page of a browser set to Chinese (synthesize-zh.png; needs fonts-noto-cjk).

Usage: .venv/bin/python scripts/take_screenshots.py   (needs Debian's chromium)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.test_app_in_chromium import CHROMIUM, FLAGS, _idle, running_app  # noqa: E402

TEXTS = [
    "Hello! This is the embedded voice.",
    "Each synthesis leaves its mark on the memory chart: a load, a peak, and what stays.",
    "Long texts are split at sentence boundaries. Every sentence runs through the network on "
    "its own, so the peak grows with the longest sentence, not with the whole text. The "
    "cleanup button then shows, in bytes, what it gave back.",
]


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    out = ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, running_app(Path(tmp)) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        _idle(page)
        for i, text in enumerate(TEXTS):
            box = page.get_by_label("Text to speak")
            box.fill(text)
            box.press("Control+Enter")
            _idle(page)
            page.get_by_role("button", name="Synthesize").click()
            _idle(page)
            expect(page.locator("audio")).to_have_count(1, timeout=120_000)
            if i == 1:
                page.get_by_role("button", name="Clear memory").click()
                _idle(page)
        page.screenshot(path=str(out / "synthesize.png"), full_page=True)
        page.get_by_role("link", name="Monitor").click()
        _idle(page)
        page.wait_for_timeout(2500)
        page.screenshot(path=str(out / "monitor.png"), full_page=True)
        # the same session in Chinese, as a browser set to zh-CN opens it
        chinese = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1100})
        page = chinese.new_page()
        page.goto(url)
        _idle(page)
        page.get_by_role("button", name="合成", exact=True).click()
        _idle(page)
        expect(page.locator("audio")).to_have_count(1, timeout=120_000)
        page.screenshot(path=str(out / "synthesize-zh.png"), full_page=True)
        browser.close()
    print(f"wrote {out}/synthesize.png, monitor.png and synthesize-zh.png")


if __name__ == "__main__":
    main()
