"""Stopping a synthesis nobody waits for any more, at the next sentence or segment boundary.

The caller that can tell (the HTTP service sees its client go away) runs the synthesis inside
:func:`cancellable` with a :class:`threading.Event`; engines call :func:`checkpoint` between
sentences or segments, which raises :class:`Cancelled` once the event is set. The engine API
does not change: the flag travels with the thread that runs the synthesis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from glmtts.errors import GlmTtsError

_LOCAL = threading.local()


class Cancelled(GlmTtsError):
    """The synthesis was stopped because nobody waits for it (recorded as ``cancelled``)."""

    outcome = "cancelled"


@contextmanager
def cancellable(flag: threading.Event) -> Iterator[threading.Event]:
    """Run the ``with`` body so that :func:`checkpoint` raises once ``flag`` is set."""
    previous = getattr(_LOCAL, "flag", None)
    _LOCAL.flag = flag
    try:
        yield flag
    finally:
        _LOCAL.flag = previous


def checkpoint(done: int | None = None, total: int | None = None) -> None:
    """Raise :class:`Cancelled` when this thread's synthesis was cancelled (call between
    sentences or segments; ``done``/``total`` say how far it got)."""
    flag = getattr(_LOCAL, "flag", None)
    if flag is not None and flag.is_set():
        where = f" after {done} of {total} sentences" if done is not None and total else ""
        raise Cancelled(f"the synthesis was stopped{where}: its client went away")
