"""Audio as it is made: an engine hands each sentence's samples to whoever listens, while the
synthesis goes on (the HTTP service streams them to its client).

Like :mod:`glmtts.cancel`, the listener travels with the thread that runs the synthesis: the
caller runs it inside :func:`streaming`, engines call :func:`emit` once per sentence or
segment; the engine API does not change, and an engine that never emits (or runs in a worker
process) just delivers its whole result at the end. The pieces, concatenated, are exactly the
result's audio (pauses between sentences included).

``index`` numbers the pieces of one attempt from 0; a piece whose index is not above the last
one starts the synthesis over (the session's out-of-memory retry), so a listener that already
passed a piece on skips it again (:class:`Resume`). An engine that knows how many pieces the
text makes says so (``total``), and a ``progress`` callback hears ``(done, total)`` after each
piece (the Synthesize page's "sentence 3 of 7").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

#: ``listener(samples, sample_rate, index)``: mono float32 samples of one piece.
Listener = Callable[[np.ndarray, int, int], None]
#: ``progress(done, total)``: pieces made so far in this attempt, and how many there will be
#: (None when the engine does not know).
Progress = Callable[[int, int | None], None]

_LOCAL = threading.local()


@contextmanager
def streaming(listener: Listener | None, progress: Progress | None = None) -> Iterator[None]:
    """Run the ``with`` body so that :func:`emit` hands pieces to ``listener`` and reports
    to ``progress`` (None: to nobody)."""
    previous = getattr(_LOCAL, "listener", None), getattr(_LOCAL, "progress", None)
    _LOCAL.listener, _LOCAL.progress = listener, progress
    try:
        yield
    finally:
        _LOCAL.listener, _LOCAL.progress = previous


def emit(samples: np.ndarray, sample_rate: int, index: int, total: int | None = None) -> None:
    """Hand one piece of audio (the ``index``-th of this attempt, of ``total`` when known)
    to this thread's listener and progress callback, if any."""
    listener = getattr(_LOCAL, "listener", None)
    if listener is not None:
        listener(samples, sample_rate, index)
    progress = getattr(_LOCAL, "progress", None)
    if progress is not None:
        progress(index + 1, total)


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
