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

#: Texts spoken in turn, with the sentences each has (the page's caption says it when done).
TEXTS = [
    ("Hello! This is the embedded voice.", 2),
    ("Each synthesis leaves its mark on the memory chart: a load, a peak, and what stays.", 1),
    ("Long texts are split at sentence boundaries. Every sentence runs through the network on "
     "its own, so the peak grows with the longest sentence, not with the whole text. The "
     "cleanup button then shows, in bytes, what it gave back.", 3),
]
VIEWPORT = {"width": 1400, "height": 1250}


def _done(page, caption: str) -> None:
    """Wait until this synthesis is drawn: its caption, then the script idle (the idle state
    alone can be read before the click's rerun has begun)."""
    page.get_by_text(caption).first.wait_for(timeout=120_000)
    _idle(page)


def _shoot(page, path: Path) -> None:
    """The page from the top of the sidebar (a click there scrolls it) and of the main area."""
    page.evaluate("""() => {
        for (const id of ["stSidebarContent", "stMain"]) {
            const el = document.querySelector(`[data-testid='${id}']`);
            if (el) el.scrollTop = 0;
        }
    }""")
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    out = ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, running_app(Path(tmp)) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        _idle(page)
        for i, (text, sentences) in enumerate(TEXTS):
            box = page.get_by_label("Text to speak")
            box.fill(text)
            box.press("Control+Enter")
            _idle(page)
            page.get_by_role("button", name="Synthesize").click()
            _done(page, f"· {sentences} sentence(s) ·")
            expect(page.locator("audio")).to_have_count(1, timeout=120_000)
            if i == 1:
                page.get_by_role("button", name="Clear memory").click()
                _done(page, "Full cleanup freed")
        page.get_by_text("loaded on").first.wait_for(timeout=60_000)
        _shoot(page, out / "synthesize.png")
        page.get_by_role("link", name="Monitor").click()
        _idle(page)
        page.wait_for_timeout(2500)
        _shoot(page, out / "monitor.png")
        # the same page in Chinese, as a browser set to zh-CN opens it
        chinese = browser.new_context(locale="zh-CN", viewport=VIEWPORT)
        page = chinese.new_page()
        page.goto(url)
        _idle(page)
        page.get_by_role("button", name="合成", exact=True).click()
        _done(page, "· 3 句 ·")
        expect(page.locator("audio")).to_have_count(1, timeout=120_000)
        _shoot(page, out / "synthesize-zh.png")
        browser.close()
    print(f"wrote {out}/synthesize.png, monitor.png and synthesize-zh.png")


if __name__ == "__main__":
    main()
