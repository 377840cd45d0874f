"""Waiting for a condition in tests: a bounded poll, a guard against hanging (not a timing
assertion: the bound is far above what any machine needs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float = 60.0, every_s: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every_s)
    raise AssertionError("the condition did not come true in time")
