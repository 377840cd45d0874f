"""Log a recurring failure once, until it clears (for background reads)."""

from __future__ import annotations

import logging
import threading


class LogOnce:
    """Remembers which failures were already logged, so a 10 Hz loop logs each one once.

    A key is logged again only after :meth:`clear` was called for it (the failure went away).
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def log(self, key: str, level: int, message: str, *args: object,
            exc_info: bool = False) -> bool:
        """Log ``message`` at ``level`` unless ``key`` was logged already; True if it logged.

        ``exc_info``: attach the exception being handled (call from an ``except`` block)."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True

    def clear(self, key: str) -> None:
        """Forget ``key``: the next failure under it is logged again."""
        with self._lock:
            self._seen.discard(key)
