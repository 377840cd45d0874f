"""Several syntheses on one loaded model: a shared turn for syntheses, an exclusive one for
loads and cleanups.

A :class:`~glmtts.session.SynthesisSession` serialises everything on its device's lock. The
service's :class:`ConcurrentSession` keeps that lock as the exclusive side of a readers-writer
turn (:class:`SharedTurn`): syntheses of an engine that declares ``Capabilities.concurrent``
share the turn (how many at once is the admission's business, :mod:`service.admission`), while
a cleanup waits until no synthesis runs and holds every new one back until it is done (writer
preference, so a cleanup is never starved). Loading is done once, under its own lock. An
out-of-memory recovery inside a synthesis (a full cleanup) leaves the shared turn, waits for
the exclusive one, cleans, and takes its shared turn again. Engines that do not declare it
(twin, engines in a worker process: the worker serialises over its socket) keep the
session's one-at-a-time behaviour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from glmtts.registry import device_lock
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from monitoring.cleanup import CleanupResult
from monitoring.records import EventRecord


class SharedTurn:
    """A readers-writer turn around one exclusive lock (the device's).

    The first shared holder takes ``lock`` and the last one gives it back (a plain
    :class:`threading.Lock` may be released by another thread); an exclusive holder takes
    ``lock`` itself. While an exclusive holder waits, no new shared holder enters.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._cond = threading.Condition()
        self._shared = 0
        self._writers = 0

    @property
    def shared_holders(self) -> int:
        """Syntheses inside the shared turn now."""
        with self._cond:
            return self._shared

    def acquire_shared(self) -> None:
        with self._cond:
            while self._writers:
                self._cond.wait()
            if self._shared == 0:
                self._lock.acquire()  # blocks while an exclusive holder runs
            self._shared += 1

    def release_shared(self) -> None:
        with self._cond:
            self._shared -= 1
            if self._shared == 0:
                self._lock.release()
            self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers += 1
        try:
            self._lock.acquire()
        finally:
            with self._cond:
                self._writers -= 1
                self._cond.notify_all()
        try:
            yield
        finally:
            self._lock.release()
            with self._cond:
                self._cond.notify_all()


class ConcurrentSession(SynthesisSession):
    """A synthesis session whose syntheses may overlap when its engine allows it.

    Takes :class:`~glmtts.session.SynthesisSession`'s arguments. :attr:`concurrent` says
    whether syntheses share the turn (the engine declares it and runs in this process).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._local = threading.local()
        self._load_lock = threading.Lock()
        self._turn: SharedTurn | None = None
        super().__init__(*args, **kwargs)

    @property
    def concurrent(self) -> bool:
        """Whether several syntheses may run at once on this session's model."""
        return bool(self.engine.capabilities.concurrent and not self.engine.isolated)

    def turn(self) -> SharedTurn:
        """The readers-writer turn around this session's device lock."""
        if self._turn is None:
            device = self.engine.device or self.engine.resolve_device(self.device)
            self._turn = SharedTurn(device_lock(device))
        return self._turn

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the device alone: no synthesis runs until the block ends (waits for running
        ones to finish first)."""
        with self.turn().exclusive():
            yield

    @contextmanager
    def _device_turn(self) -> Iterator[float]:
        if not self.concurrent:
            with super()._device_turn() as waited:
                yield waited
            return
        t0 = time.perf_counter()
        if getattr(self._local, "exclusive", False):
            with self.turn().exclusive():
                yield time.perf_counter() - t0
            return
        with self.turn().shared():
            self._local.shared = True
            try:
                yield time.perf_counter() - t0
            finally:
                self._local.shared = False

    def cleanup(self, level: str = "full") -> CleanupResult:
        self._local.exclusive = True
        try:
            return super().cleanup(level)
        finally:
            self._local.exclusive = False

    def _cleanup_unlocked(self, level: str) -> CleanupResult:
        if not getattr(self._local, "shared", False):
            return super()._cleanup_unlocked(level)
        # An out-of-memory recovery inside a shared turn: clean alone, then share again.
        turn = self.turn()
        turn.release_shared()
        try:
            with turn.exclusive():
                return super()._cleanup_unlocked(level)
        finally:
            turn.acquire_shared()

    def ensure_loaded(self, request: SynthesisRequest | None = None) -> EventRecord | None:
        if self.engine.loaded:
            return None
        with self._load_lock:  # two first requests at once: one load
            return super().ensure_loaded(request)
