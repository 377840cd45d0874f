"""An ordered write-behind backlog: items whose write was blocked (another process holds a
lock) wait here and a background thread writes them, oldest first, as soon as it can."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)


class WriteBehind:
    """Writes items with ``write``; an item whose write raises ``blocked`` waits, in order.

    While items wait, new ones join them at once (the caller waits for a blocked write once
    per episode, not once per item). Any other exception of ``write`` is raised to the caller
    on the first try; in the background it is logged and that item counted as lost.

    Args:
        write: Writes one item (raises ``blocked`` while it cannot).
        blocked: The exception type that means "try again later".
        name: For log lines.
        max_items: Longest backlog; beyond it the oldest items are dropped (counted).
    """

    def __init__(self, write: Callable[[Any], object], blocked: type[BaseException], *,
                 name: str = "", max_items: int = 10_000) -> None:
        self._write = write
        self._blocked = blocked
        self.name = name
        self.max_items = max_items
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.lost = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._items)

    def submit(self, item: Any) -> None:
        """Write ``item`` now, or (while writes are blocked) after the items before it."""
        with self._lock:
            if self._items:
                self._append(item)
                return
        try:
            self._write(item)
        except self._blocked:
            with self._lock:
                self._append(item)

    def flush(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for the backlog to be written; whether it is empty."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._items and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
            return not self._items

    def close(self, timeout_s: float) -> int:
        """Flush (at most ``timeout_s``), then give up what is left; returns how many."""
        self.flush(timeout_s)
        with self._lock:
            self._closed = True
            left = len(self._items)
            self.lost += left
            self._items.clear()
            self._changed.notify_all()
        return left

    def _append(self, item: Any) -> None:
        """Under the lock: queue ``item``, start the writer thread when none runs."""
        if self._closed:
            self.lost += 1
            return
        if len(self._items) >= self.max_items:
            self._items.popleft()
            self.lost += 1
        self._items.append(item)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._drain, daemon=True,
                                            name=f"write-behind {self.name}")
            self._thread.start()

    def _drain(self) -> None:
        delay = 0.05
        while True:
            with self._lock:
                if not self._items or self._closed:
                    self._changed.notify_all()
                    return
                item = self._items[0]
            try:
                self._write(item)
            except self._blocked:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception as err:  # not a lock: waiting will not help  # noqa: BLE001
                _log.warning("%s: a waiting item cannot be written: %s", self.name, err)
                with self._lock:
                    self._items.popleft()
                    self.lost += 1
                continue
            delay = 0.05
            with self._lock:
                self._items.popleft()
                self._changed.notify_all()
