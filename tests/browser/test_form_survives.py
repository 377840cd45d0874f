"""Nothing typed is lost, in a real browser: every persisted widget on Synthesize, Batch, Tune and
History is set, then the test tours every page in a row, comes back before a page has finished
loading, runs a full and a light cleanup, reloads the page, and checks every value after each
step (Debian's Chromium driven by Playwright against ``streamlit run``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.browser.test_app_in_chromium import (
    ARTIFACTS,
    CHROMIUM,
    FLAGS,
    _idle,
    running_app,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed "
                                        "(scripts/run-tests.sh installs it)")]

TEXT = "Kept across every page, every cleanup and a reload."
PAGES = ["Synthesize", "Monitor", "History", "Batch", "Tune"]


def _nav(page, title: str, wait: bool = True) -> None:
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=title,
                                                          exact=True).click()
    if wait:
        page.wait_for_url(f"**/{'' if title == 'Synthesize' else title.lower()}*")
        _idle(page)


def _settle(page) -> None:
    """Wait until the rerun that a change started has ended (it may not have begun yet)."""
    page.wait_for_timeout(400)
    _idle(page)


def _widget(page, testid: str, label: str):
    return page.get_by_test_id(testid).filter(
        has=page.get_by_test_id("stWidgetLabel").get_by_text(label, exact=True))


def _choose(page, label: str, option: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):  # a rerun still drawing the page may replace the open list
        _settle(page)
        _widget(page, "stSelectbox", label).get_by_role("combobox").click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=10_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    _settle(page)


def _fill(page, testid: str, label: str, value: str, submit: str = "Enter") -> None:
    box = _widget(page, testid, label).locator("textarea, input").first
    box.fill(value)
    box.press(submit)
    _settle(page)


def _advanced(page) -> None:
    details = page.locator("details", has_text="Advanced settings")
    if details.get_attribute("open") is None:
        details.locator("summary").click()


def _selected(page, label: str) -> str:
    return _widget(page, "stSelectbox", label).get_by_role("combobox").input_value()


def _checked(page, label: str) -> bool:
    return _widget(page, "stCheckbox", label).locator("input").is_checked()


def _radio(page, label: str) -> str:
    group = _widget(page, "stRadio", label)
    return group.locator("label", has=page.locator("input:checked")).inner_text().strip()


def _synthesize_values(page) -> dict:
    _advanced(page)
    return {
        "engine": _selected(page, "Engine"),
        "text": _widget(page, "stTextArea", "Text to speak").locator("textarea").input_value(),
        "rate": _selected(page, "Sample rate"),
        "kv": _checked(page, "KV cache (prompt history)"),
        "speed": _widget(page, "stSlider", "Speed").get_by_test_id(
            "stSliderThumbValue").inner_text(),
        "fixed seed": _checked(page, "Fixed seed"),
        "seed": _widget(page, "stNumberInput", "Seed").locator("input").input_value(),
        "sampling": _radio(page, "Sampling method"),
        "cleanup": _radio(page, "Cleanup"),
    }


def _batch_values(page) -> dict:
    return {"source": _radio(page, "Tasks"),
            "path": _widget(page, "stTextInput", "JSONL path on the server").locator(
                "input").input_value()}


def _tune_values(page) -> dict:
    return {"budget": _widget(page, "stNumberInput", "Memory budget (GiB)").locator(
                "input").input_value(),
            "texts": _widget(page, "stTextArea",
                             "Texts, one per line (their lengths are the x axis)").locator(
                "textarea").input_value()}


def _history_values(page) -> dict:
    return {"scope": _radio(page, "Sessions"), "kinds": _tags(page, "Kinds")}


def _tags(page, label: str) -> list[str]:
    return sorted(_widget(page, "stMultiSelect", label).locator("[data-tag] span[title]")
                  .all_inner_texts())


def test_every_value_survives_tours_cleanups_and_a_reload(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with running_app(tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(url)
            _settle(page)
            # Synthesize: every persisted widget away from its default
            _choose(page, "Engine", "twin")
            _fill(page, "stTextArea", "Text to speak", TEXT, "Control+Enter")
            _advanced(page)
            _choose(page, "Sample rate", "32,000 Hz")
            _widget(page, "stCheckbox", "KV cache (prompt history)").locator("label").click()
            _settle(page)
            speed = _widget(page, "stSlider", "Speed")
            for _ in range(12):  # one step at a time: a key pressed during a rerun can be lost
                if speed.get_by_test_id("stSliderThumbValue").inner_text() == "1.25":
                    break
                speed.locator("input[type=range]").focus()
                speed.locator("input[type=range]").press("ArrowRight")
                _settle(page)
            _fill(page, "stNumberInput", "Seed", "123")
            _widget(page, "stRadio", "Sampling method").get_by_text("topk", exact=True).click()
            _settle(page)
            _widget(page, "stRadio", "Cleanup").get_by_text("Light", exact=True).click()
            _settle(page)
            synth = {"engine": "twin", "text": TEXT, "rate": "32,000 Hz", "kv": True,
                     "speed": "1.25", "fixed seed": True, "seed": "123", "sampling": "topk",
                     "cleanup": "Light"}
            assert _synthesize_values(page) == synth

            _nav(page, "Batch")
            _widget(page, "stRadio", "Tasks").get_by_text("Path on the server",
                                                          exact=True).click()
            _settle(page)
            _fill(page, "stTextInput", "JSONL path on the server", "mine.jsonl")
            batch = {"source": "Path on the server", "path": "mine.jsonl"}
            assert _batch_values(page) == batch
            _nav(page, "Tune")
            _fill(page, "stNumberInput", "Memory budget (GiB)", "3.50")
            _fill(page, "stTextArea", "Texts, one per line (their lengths are the x axis)",
                  "One line.\nA second, longer line.", "Control+Enter")
            tune = {"budget": "3.50", "texts": "One line.\nA second, longer line."}
            assert _tune_values(page) == tune
            _nav(page, "History")
            _widget(page, "stRadio", "Sessions").get_by_text("all sessions", exact=True).click()
            _settle(page)
            before = _tags(page, "Kinds")
            _widget(page, "stMultiSelect", "Kinds").get_by_role(
                "button", name=f"Remove {before[-1]}").click()
            _settle(page)
            history = _history_values(page)
            assert history["scope"] == "all sessions"
            assert len(history["kinds"]) == len(before) - 1

            checks: dict[str, Callable[[object], dict]] = {
                "Synthesize": _synthesize_values, "Batch": _batch_values,
                "Tune": _tune_values, "History": _history_values}
            expected = {"Synthesize": synth, "Batch": batch, "Tune": tune, "History": history}

            def check(step: str) -> None:
                for title, read in checks.items():
                    _nav(page, title)
                    got = read(page)
                    if got != expected[title]:
                        page.screenshot(path=str(ARTIFACTS / f"form-lost-{title}.png"),
                                        full_page=True)
                    assert got == expected[title], (step, title)
                    page.screenshot(path=str(ARTIFACTS / f"page-{title.lower()}.png"),
                                    full_page=True)

            # every page in a row, then back (check() tours them again)
            for title in [*PAGES[1:], "Synthesize"]:
                _nav(page, title)
            check("after touring every page")
            # back before a page has finished loading
            for title in ("Monitor", "Tune", "Batch"):
                _nav(page, title, wait=False)
                page.wait_for_timeout(150)
            _nav(page, "Synthesize")
            assert _synthesize_values(page) == synth, "after coming back early"
            # a light and a full cleanup
            for level, radio in (("light", "Light"), ("full", "Full")):
                _widget(page, "stRadio", "Cleanup").get_by_text(radio, exact=True).click()
                _settle(page)
                page.get_by_role("button", name="Clear memory").click()
                _settle(page)
                synth["cleanup"] = radio
                assert _synthesize_values(page) == synth, f"after a {level} cleanup"
            check("after the cleanups")
            # a reload of the page (a new Streamlit session: the values come from the URL)
            page.reload()
            _settle(page)
            check("after a reload")
        finally:
            page.screenshot(path=str(ARTIFACTS / "form-last.png"), full_page=True)
            browser.close()
