from __future__ import annotations

import pytest


@pytest.fixture
def app(open_app):
    """A fresh AppTest of the whole app with its own SQLite file, after its first run."""
    return open_app()
