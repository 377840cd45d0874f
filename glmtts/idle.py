"""Idle release in tiers: the longer a model goes unused, the more of its memory goes back.

Shared by the HTTP service (``serve --idle-tiers``, :mod:`service.idle`; on by default) and the
Streamlit app (the sidebar's *Idle release*, :mod:`ui.idle`; off by default). Tiers are idle
seconds ``T1,T2,T3``: after T1 a light cleanup (gc, ``empty_cache``, ``malloc_trim``; the
model stays), after T2 a full cleanup (the model is unloaded: on a GPU its weights and caches
leave the device, on the CPU host memory goes back), after T3 a restart of the engine's worker
process where the engine runs in one (skipped otherwise). Idleness counts from the end of the
session's last load or synthesis (or from what the caller says: the service counts from its
admission queue), and from a change of the tiers; each tier fires once per idle period, in
order, and activity starts a new period. A period starts only while the session holds a model
or a worker: a session that never loaded anything gets no events.

Each tier is a cleanup through the session's own cleanup path, so it is an ordinary cleanup
event (store, History, ``glmtts_cleanup_freed_bytes_total``) with the features ``trigger:
idle`` and ``tier``, and its freed bytes; the next load after a tier (the cost of coming back,
measured) carries the same marker, and its duration is written into that tier's entry. A tier
never runs under a synthesis: it takes the session's device turn alone, checks again that
nothing happened meanwhile, and a synthesis that arrives during the release waits for it (then
reloads).

One :class:`IdleReleaser` thread ticks any number of :class:`IdleTiers` (the app: one per
browser session's model; the service: its one session).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from glmtts.say import N_

log = logging.getLogger(__name__)

#: Cleanup level of each tier (1-based).
TIER_LEVELS = ("light", "full", "restart")
#: How often the releaser looks at the clock.
POLL_S = 0.1
#: Tier entries kept per session (newest last).
HISTORY_KEPT = 50


def check_tiers(tiers: tuple[float, ...]) -> None:
    """Refuse idle tiers that are not 1-3 positive, increasing numbers of seconds.

    Raises:
        ValueError: they are not.
    """
    if len(tiers) > 3 or any(not t > 0 for t in tiers) or list(tiers) != sorted(set(tiers)):
        raise ValueError(f"idle tiers are up to three increasing numbers of seconds (light "
                         f"cleanup, unload, worker restart), e.g. 300,900,3600, or 'off'; "
                         f"not {tiers!r}")


def parse_tiers(text: str) -> tuple[float, ...]:
    """``300,900,3600`` -> (300.0, 900.0, 3600.0); ``off`` (or empty) -> ().

    Raises:
        ValueError: not numbers, or not valid tiers.
    """
    if text.strip().lower() in ("", "off", "0", "none"):
        return ()
    try:
        tiers = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"idle tiers are numbers of seconds separated by commas (e.g. "
                         f"300,900,3600) or 'off', not {text!r}") from None
    check_tiers(tiers)
    return tiers


class IdleTracker:
    """The session's tracker as the idle release sees it: it adds one-shot features to the
    next event of a kind (the idle marker on a tier's cleanup and on the reload after it),
    counts the loads and syntheses running, notes when the last one ended, and hands each
    marked event's record to ``on_marked``; everything else is the wrapped tracker's."""

    ACTIVE = ("synthesis", "load")

    def __init__(self, tracker: Any,
                 on_marked: Callable[[str, Any], None] | None = None) -> None:
        self.wrapped = tracker
        self.on_marked = on_marked
        self._marks: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.running = 0
        #: ``time.monotonic()`` when the last load or synthesis ended (or this was made).
        self.last_activity = time.monotonic()

    def mark_next(self, kind: str, **features: Any) -> None:
        with self._lock:
            self._marks[kind] = features

    def clear(self, kind: str) -> None:
        with self._lock:
            self._marks.pop(kind, None)

    def track(self, kind: str, label: str | None = None, **features: Any) -> Any:
        with self._lock:
            marks = self._marks.pop(kind, {})
        handle = self.wrapped.track(kind, label, **{**features, **marks})
        if kind not in self.ACTIVE and not marks:
            return handle
        return _Watched(handle, self, kind, active=kind in self.ACTIVE, marked=bool(marks))

    def _begin(self) -> None:
        with self._lock:
            self.running += 1

    def _end(self) -> None:
        with self._lock:
            self.running -= 1
            self.last_activity = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class _Watched:
    """A tracked event's handle, counted while it runs."""

    def __init__(self, handle: Any, owner: IdleTracker, kind: str, *, active: bool,
                 marked: bool) -> None:
        self._handle, self._owner, self._kind = handle, owner, kind
        self._active, self._marked = active, marked

    def __enter__(self) -> _Watched:
        if self._active:
            self._owner._begin()
        try:
            self._handle.__enter__()
        except BaseException:
            if self._active:
                self._owner._end()
            raise
        return self

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._handle.__exit__(*exc)
        finally:
            if self._active:
                self._owner._end()
            if self._marked and self._owner.on_marked is not None:
                self._owner.on_marked(self._kind, self._handle.record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _alone(session: Any) -> AbstractContextManager[Any]:
    """The session's device turn, alone (a concurrent session's exclusive side)."""
    exclusive = getattr(session, "exclusive", None)
    return exclusive() if exclusive is not None else session._device_turn()


class IdleTiers:
    """The idle tiers of one synthesis session: when each fires, what it freed, and what
    coming back cost.

    Args:
        session: A :class:`~glmtts.session.SynthesisSession` (its tracker is wrapped by an
            :class:`IdleTracker`, again after an engine switch replaced it).
        tiers: Idle seconds of each tier, increasing (at most three; empty: off).
        last_activity: ``time.monotonic()`` of the last activity (default: the end of the
            session's last load or synthesis).
        busy: Whether a synthesis runs or waits (default: one runs).
        on_release: Called with each tier's entry once it ran (e.g. a counter).
    """

    def __init__(self, session: Any, tiers: tuple[float, ...] = (), *,
                 last_activity: Callable[[], float] | None = None,
                 busy: Callable[[], bool] | None = None,
                 on_release: Callable[[dict[str, Any]], None] | None = None) -> None:
        check_tiers(tuple(tiers))
        self.session = session
        self.tiers = tuple(tiers)
        self._activity = last_activity
        self._busy = busy
        self.on_release = on_release
        self._lock = threading.Lock()  # short sections only: never held while releasing
        self._wrap()
        self._since = time.monotonic()
        self._period = self._start()
        self.fired: list[dict[str, Any]] = []  # this idle period's tiers
        self.history: list[dict[str, Any]] = []  # every tier run, newest last (bounded)

    # ------------------------------------------------------------------ wiring
    def _wrap(self) -> None:
        tracker = self.session.tracker
        if not isinstance(tracker, IdleTracker):
            tracker = IdleTracker(tracker, self._returned)
            self.session.tracker = tracker
        tracker.on_marked = self._returned
        self.tracker = tracker

    def set_tiers(self, tiers: tuple[float, ...]) -> None:
        """Use other tiers from now on (a change starts a new idle period).

        Raises:
            ValueError: not valid tiers.
        """
        tiers = tuple(tiers)
        check_tiers(tiers)
        with self._lock:
            if tiers != self.tiers:
                self.tiers = tiers
                self._since = time.monotonic()

    def last_activity(self) -> float:
        return self._activity() if self._activity is not None else self.tracker.last_activity

    def busy(self) -> bool:
        return self._busy() if self._busy is not None else self.tracker.running > 0

    def _start(self) -> float:
        """When the current idle period started."""
        return max(self.last_activity(), self._since)

    def holding(self) -> bool:
        """Whether the session holds anything to release (a model, or a worker)."""
        session = self.session
        return bool(session.loaded or getattr(session.engine, "pid", None))

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The tiers, idleness, the next tier and its countdown, this period's tiers and the
        last ones run (what ``/v1/memory`` and the app's sidebar show)."""
        with self._lock:
            self._wrap()
            busy = self.busy()
            start = self._start()
            idle_s = 0.0 if busy else max(0.0, time.monotonic() - start)
            period_fired = [] if start != self._period else list(self.fired)
            holding = self.holding() or bool(period_fired)
            nxt = (len(period_fired) + 1 if holding and len(period_fired) < len(self.tiers)
                   else None)
            return {
                "enabled": bool(self.tiers), "tiers_s": list(self.tiers),
                "levels": list(TIER_LEVELS[:len(self.tiers)]), "busy": busy,
                "holding": holding, "idle_s": round(idle_s, 3), "next_tier": nxt,
                "next_level": TIER_LEVELS[nxt - 1] if nxt else None,
                "next_in_s": (None if nxt is None or busy else
                              round(max(0.0, self.tiers[nxt - 1] - idle_s), 3)),
                "fired": period_fired, "recent": [dict(e) for e in self.history[-10:]],
            }

    # ------------------------------------------------------------------ the clock
    def tick(self) -> dict[str, Any] | None:
        """Run the tier that is due now, if any; return its entry (one thread ticks)."""
        with self._lock:
            self._wrap()
            if not self.tiers or self.busy():
                return None
            start = self._start()
            if start != self._period:  # activity (or new tiers): a new period
                self._period = start
                self.fired = []
            tier = len(self.fired) + 1
            if tier > len(self.tiers) or time.monotonic() - start < self.tiers[tier - 1]:
                return None
            if not self.fired and not self.holding():
                return None  # nothing loaded, no worker: nothing to release
            idle_s = self.tiers[tier - 1]
        entry = self._release(tier, idle_s, start)  # may wait for the device turn
        with self._lock:
            if self._period == start:
                self.fired.append(entry)
        return entry

    def _skip_reason(self, level: str) -> str | None:
        session = self.session
        if level == "full" and not session.loaded:
            return N_("no model loaded")
        if level == "restart" and not session.isolated:
            return N_("the engine runs in this process: there is no worker to restart")
        if level == "restart" and getattr(session.engine, "pid", None) is None:
            return N_("no worker running")
        return None

    def _release(self, tier: int, idle_s: float, period: float) -> dict[str, Any]:
        level = TIER_LEVELS[tier - 1]
        entry: dict[str, Any] = {"tier": tier, "level": level, "idle_s": idle_s}
        skip = self._skip_reason(level)
        if skip is None:
            with _alone(self.session):  # waits for a synthesis that slipped in, holds new ones
                if self.busy() or self._start() != period:
                    return {**entry, "skipped": N_("a request arrived"), "at": time.time()}
                self.tracker.mark_next("cleanup", trigger="idle", tier=tier)
                try:
                    result = self.session._cleanup_unlocked(level)
                finally:
                    self.tracker.clear("cleanup")  # left if it failed before its event
                if level in ("full", "restart"):
                    self.tracker.mark_next("load", trigger="idle", tier=tier,
                                           reload_after="idle release")
            entry.update(event_id=result.event.event_id, duration_s=round(result.duration_s, 4),
                         host_rss_freed_bytes=result.host_rss_freed_bytes,
                         torch_reserved_freed_bytes=result.torch_reserved_freed_bytes,
                         nvml_process_freed_bytes=result.nvml_process_freed_bytes)
            log.info("idle tier %d (%s) after %.0f s: event %s", tier, level, idle_s,
                     result.event.event_id)
        else:
            entry["skipped"] = skip
        entry["at"] = time.time()
        with self._lock:
            self.history.append(entry)
            del self.history[:-HISTORY_KEPT]
        if skip is None and self.on_release is not None:
            self.on_release(entry)
        return entry

    def _returned(self, kind: str, record: Any) -> None:
        """A marked event ended: a load after a tier is what coming back cost."""
        if kind != "load" or record is None or record.features.get("trigger") != "idle":
            return
        tier = record.features.get("tier")
        with self._lock:
            for entry in reversed(self.history):
                if entry.get("tier") == tier and "event_id" in entry:
                    if "return_s" not in entry:
                        entry.update(return_s=round(record.duration_s, 4),
                                     return_event_id=record.event_id,
                                     return_ok=record.error_type is None)
                    return


class IdleReleaser:
    """One daemon thread that ticks the tiers of every watched session (weakly held: tiers
    nobody else keeps are forgotten); it starts with the first :meth:`watch`."""

    def __init__(self, poll_s: float = POLL_S, name: str = "idle-release") -> None:
        self.poll_s = poll_s
        self.name = name
        self._watched: weakref.WeakSet[IdleTiers] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, tiers: IdleTiers) -> IdleTiers:
        with self._lock:
            self._watched.add(tiers)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return tiers

    def unwatch(self, tiers: IdleTiers) -> None:
        with self._lock:
            self._watched.discard(tiers)

    def watched(self) -> Iterator[IdleTiers]:
        with self._lock:
            return iter(list(self._watched))

    def stop(self) -> None:
        """End the thread (waits for a tier that runs)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            for tiers in self.watched():
                try:
                    tiers.tick()
                except Exception:  # a failed release must not end the thread
                    log.exception("an idle release failed")
