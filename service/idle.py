"""Idle release in tiers: the longer nobody asks for speech, the more memory goes back.

``serve --idle-tiers T1,T2,T3`` (seconds of idleness, default 300,900,3600; ``off``): after
T1 a light cleanup (gc, ``empty_cache``, ``malloc_trim``; the model stays), after T2 a full
cleanup (the model is unloaded), after T3 a restart of the engine's worker process where the
engine runs in one (skipped otherwise). Idleness starts when the last synthesis ended (or the
service started); each tier fires once per idle period, in order, and a request starts a new
period.

Each tier is a cleanup event through the session's ordinary cleanup path (so it is in the
store, the History page and ``glmtts_cleanups_total``/``glmtts_cleanup_freed_bytes_total``)
with the features ``trigger: idle`` and ``tier``; the next load after a tier that unloaded the
model (the cost of coming back, measured) carries the same marker. A tier never runs while a
synthesis runs or waits: it takes the session's exclusive turn, checks again that nothing
happened since, and a request that arrives meanwhile waits for the release to end (and then
reloads). ``/v1/memory`` shows the countdown to the next tier.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Cleanup level of each tier (1-based).
TIER_LEVELS = ("light", "full", "restart")
#: How often the releaser looks at the clock.
POLL_S = 0.1


class MarkingTracker:
    """The session's tracker, adding one-shot features to the next event of a kind (the idle
    marker on a tier's cleanup and on the reload that follows); everything else is the
    wrapped tracker's."""

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker
        self._marks: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def mark_next(self, kind: str, **features: Any) -> None:
        with self._lock:
            self._marks[kind] = features

    def clear(self, kind: str) -> None:
        with self._lock:
            self._marks.pop(kind, None)

    def track(self, kind: str, label: str | None = None, **features: Any) -> Any:
        with self._lock:
            marks = self._marks.pop(kind, {})
        return self._tracker.track(kind, label, **{**features, **marks})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)


class IdleRelease:
    """The idle release of one service (a daemon thread; :meth:`stop` ends it).

    Args:
        service: The :class:`~service.runtime.Service`.
        tiers: Idle seconds of each tier, increasing (at most three).
    """

    def __init__(self, service: Any, tiers: tuple[float, ...]) -> None:
        self.service = service
        self.tiers = tuple(tiers)
        self.session = service.session
        self.tracker = MarkingTracker(self.session.tracker)
        self.session.tracker = self.tracker
        self._stop = threading.Event()
        self._period = service.admitter.last_activity
        self.fired: list[dict[str, Any]] = []  # this idle period's tiers
        self.history: list[dict[str, Any]] = []  # every tier run, newest last (bounded)
        self._thread: threading.Thread | None = None

    def start(self) -> IdleRelease:
        if self.tiers:
            self._thread = threading.Thread(target=self._run, name="idle-release", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------------------ state
    def _busy(self) -> bool:
        return bool(self.service.pending or self.service.admitter.busy)

    def state(self) -> dict[str, Any]:
        """What ``/v1/memory`` shows: the tiers, idleness, the next tier and its countdown."""
        admitter = self.service.admitter
        busy = self._busy()
        idle_s = 0.0 if busy else max(0.0, time.monotonic() - admitter.last_activity)
        period_fired = [] if admitter.last_activity != self._period else list(self.fired)
        nxt = len(period_fired) + 1 if len(period_fired) < len(self.tiers) else None
        return {
            "enabled": bool(self.tiers), "tiers_s": list(self.tiers),
            "levels": list(TIER_LEVELS[:len(self.tiers)]), "busy": busy,
            "idle_s": round(idle_s, 3), "next_tier": nxt,
            "next_level": TIER_LEVELS[nxt - 1] if nxt else None,
            "next_in_s": (None if nxt is None or busy else
                          round(max(0.0, self.tiers[nxt - 1] - idle_s), 3)),
            "fired": period_fired, "recent": self.history[-10:],
        }

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._tick()
            except Exception:  # a failed release must not end the thread
                log.exception("an idle release failed")

    def _tick(self) -> None:
        admitter = self.service.admitter
        if self._busy():
            return
        if admitter.last_activity != self._period:  # a request came and went: a new period
            self._period = admitter.last_activity
            self.fired = []
        tier = len(self.fired) + 1
        if tier > len(self.tiers) or time.monotonic() - self._period < self.tiers[tier - 1]:
            return
        self.fired.append(self._release(tier, self._period))

    def _release(self, tier: int, period: float) -> dict[str, Any]:
        level = TIER_LEVELS[tier - 1]
        session = self.session
        entry: dict[str, Any] = {"tier": tier, "level": level, "idle_s": self.tiers[tier - 1]}
        skip = None
        if level == "full" and not session.loaded:
            skip = "no model loaded"
        elif level == "restart" and not session.isolated:
            skip = "the engine runs in this process: there is no worker to restart"
        elif level == "restart" and getattr(session.engine, "pid", None) is None:
            skip = "no worker running"
        if skip is None:
            with session.exclusive():  # waits for a synthesis that slipped in, holds new ones
                if self._busy() or self.service.admitter.last_activity != period:
                    return {**entry, "skipped": "a request arrived"}
                self.tracker.mark_next("cleanup", trigger="idle", tier=tier)
                try:
                    result = session._cleanup_unlocked(level)
                finally:
                    self.tracker.clear("cleanup")  # left if it failed before its event
                if level in ("full", "restart"):
                    self.tracker.mark_next("load", trigger="idle", tier=tier,
                                           reload_after="idle release")
            entry.update(event_id=result.event.event_id, duration_s=round(result.duration_s, 4),
                         host_rss_freed_bytes=result.host_rss_freed_bytes,
                         torch_reserved_freed_bytes=result.torch_reserved_freed_bytes,
                         nvml_process_freed_bytes=result.nvml_process_freed_bytes)
            counter = getattr(self.service, "idle_counter", None)
            if counter is not None:
                counter.labels(str(tier)).inc()
            log.info("idle tier %d (%s) after %.0f s: event %s", tier, level,
                     self.tiers[tier - 1], result.event.event_id)
        else:
            entry["skipped"] = skip
        entry["at"] = time.time()
        self.history.append(entry)
        del self.history[:-50]
        return entry
