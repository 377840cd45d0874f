"""Audio as it is made: an engine hands each sentence's samples to whoever listens, while the
synthesis goes on (the HTTP service streams them to its client).

Like :mod:`glmtts.cancel`, the listener travels with the thread that runs the synthesis: the
caller runs it inside :func:`streaming`, engines call :func:`emit` once per sentence or
segment; the engine API does not change, and an engine that never emits (or runs in a worker
process) just delivers its whole result at the end. The pieces, concatenated, are exactly the
result's audio (pauses between sentences included).

``index`` numbers the pieces of one attempt from 0; a piece whose index is not above the last
one starts the synthesis over (the session's out-of-memory retry), so a listener that already
passed a piece on skips it again (:class:`Resume`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

#: ``listener(samples, sample_rate, index)``: mono float32 samples of one piece.
Listener = Callable[[np.ndarray, int, int], None]

_LOCAL = threading.local()


@contextmanager
def streaming(listener: Listener | None) -> Iterator[None]:
    """Run the ``with`` body so that :func:`emit` hands pieces to ``listener`` (None: to
    nobody)."""
    previous = getattr(_LOCAL, "listener", None)
    _LOCAL.listener = listener
    try:
        yield
    finally:
        _LOCAL.listener = previous


def emit(samples: np.ndarray, sample_rate: int, index: int) -> None:
    """Hand one piece of audio (the ``index``-th of this attempt) to this thread's listener,
    if any."""
    listener = getattr(_LOCAL, "listener", None)
    if listener is not None:
        listener(samples, sample_rate, index)


class Resume:
    """Filters pieces so that a retried synthesis does not repeat what was passed on: a piece
    is new only when its index is above every index seen (with a fixed seed the retry's
    pieces are the same audio)."""

    def __init__(self) -> None:
        self.last = -1

    def is_new(self, index: int) -> bool:
        """Whether the piece ``index`` was not passed on yet (and note it as passed)."""
        if index <= self.last:
            return False
        self.last = index
        return True
