"""Clean exit on Ctrl+C and ``kill``: SIGINT/SIGTERM run cleanup callbacks, then exit 0.

For any long command (the service, a batch run)::

    with GracefulShutdown() as stop:           # installs SIGINT/SIGTERM handlers
        store = open_store(); stop.add(store.close)
        session = SynthesisSession(store=store); stop.add(session.close)
        for line in lines:
            if stop.requested:                 # cooperative mode: finish the current item
                break
            ...
    return stop.exit_code                      # 0 after a signal, as after a normal end

Callbacks run once, newest first, when the ``with`` block ends for any reason (normal end,
exception, signal), each guarded: one that fails is logged and the others still run. While they
run, further SIGINT/SIGTERM are noted and ignored, so a second Ctrl+C cannot cut a cleanup short.

Modes:
    ``interrupt=True`` (default): the first signal raises :class:`ShutdownRequested` in the main
    thread at once (like Ctrl+C's KeyboardInterrupt); ``__exit__`` swallows it. Use it where the
    work is one long call (``server.run()``) or where nothing is worth finishing.
    ``interrupt=False``: the first signal only sets :attr:`GracefulShutdown.requested`; the loop
    checks it between items. A second signal interrupts anyway.

Signal handlers can only be installed from the main thread; elsewhere the context manager still
runs its callbacks but leaves signals alone.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


class ShutdownRequested(BaseException):
    """Raised in the main thread by a SIGINT/SIGTERM handler; carries the signal number.

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


class GracefulShutdown:
    """Context manager: SIGINT/SIGTERM handlers plus cleanup callbacks (see the module doc).

    Args:
        interrupt: Raise :class:`ShutdownRequested` on the first signal (True), or only set
            :attr:`requested` (False).
        signals: Signals to handle.
    """

    def __init__(self, *, interrupt: bool = True,
                 signals: tuple[signal.Signals, ...] = HANDLED) -> None:
        self.interrupt = interrupt
        self.signals = signals
        self._callbacks: list[tuple[str, Callable[[], Any]]] = []
        self._previous: dict[int, Any] = {}
        self._signum: int | None = None
        self._count = 0
        self._ran = False
        self._cleaning = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------ state
    @property
    def requested(self) -> bool:
        """Whether a handled signal arrived."""
        return self._signum is not None

    @property
    def signum(self) -> int | None:
        """The first signal received, or None."""
        return self._signum

    @property
    def exit_code(self) -> int:
        """0: a shutdown asked for by a signal is a normal, successful end."""
        return 0

    def add(self, callback: Callable[..., Any], *args: Any, name: str | None = None,
            **kwargs: Any) -> None:
        """Run ``callback(*args, **kwargs)`` at exit (callbacks run newest first)."""
        label = name or getattr(callback, "__qualname__", repr(callback))
        self._callbacks.append((label, lambda: callback(*args, **kwargs)))

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a shutdown as a signal would (cooperative: never raises)."""
        if self._signum is None:
            self._signum = signum

    # ------------------------------------------------------------------------ signals
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        name = signal.Signals(signum).name
        if self._cleaning:
            log.warning("%s received while cleaning up: ignored, cleanup continues", name)
            return
        first = self._signum is None
        self.request(signum)
        if first:
            log.warning("%s received: shutting down (release models, flush the store)", name)
        if self.interrupt or not first:
            raise ShutdownRequested(signum)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    # ------------------------------------------------------------------------ cleanup
    def run_callbacks(self) -> None:
        """Run the callbacks now (once; later calls do nothing)."""
        with self._lock:
            if self._ran:
                return
            self._ran = True
        cleaning, self._cleaning = self._cleaning, True
        try:
            while self._callbacks:
                name, callback = self._callbacks.pop()
                try:
                    callback()
                except Exception:  # each callback guarded: the others must still run
                    log.exception("cleanup step %s failed", name)
        finally:
            self._cleaning = cleaning

    def __enter__(self) -> Self:
        self._install()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        self._cleaning = True  # from here on, signals are noted, never raised
        try:
            self.run_callbacks()
        finally:
            self._restore()
        if isinstance(exc, ShutdownRequested):
            self.request(exc.signum)
            return True
        return False
