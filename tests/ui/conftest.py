from __future__ import annotations

from pathlib import Path

import pytest

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A fresh AppTest of the whole app with its own SQLite file, after its first run."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GLMTTS_DB", str(tmp_path / "events.sqlite3"))
    from ui.state import app_resources

    app_resources.clear()  # a new store and sampler for this test's database
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    yield at
    resources = app_resources()
    resources.sampler.stop()
    app_resources.clear()
