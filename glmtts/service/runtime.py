"""The service without HTTP: one synthesis session, its store, sampler, metrics and memory
history, and what each endpoint asks of them.

One service process holds one :class:`~glmtts.session.SynthesisSession` (so one model); its
device lock serialises syntheses and cleanups, whatever the number of HTTP clients.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from glmtts.audio import wav_bytes
from glmtts.engines import engine_class
from glmtts.errors import OutOfMemoryError
from glmtts.request import SynthesisRequest
from glmtts.service.errors import BusyError
from glmtts.service.settings import ServiceSettings
from glmtts.service.snapshots import MemoryHistory
from glmtts.session import SynthesisOutcome, SynthesisSession, device_lock, loaded_models
from monitoring import Sampler, Snapshot, Store, open_store
from monitoring.cleanup import CleanupResult
from monitoring.metrics import MemoryMetrics, ModelInfo
from monitoring.records import EventRecord

try:  # the policy is optional: without it /v1/memory says "recommendation": null
    from monitoring import policy as _policy
except ImportError:  # pragma: no cover - depends on the checkout
    _policy = None

log = logging.getLogger(__name__)

#: Namespace of every metric the app exports (``glmtts_host_rss_bytes``...).
METRICS_NAMESPACE = "glmtts"
#: Events kept in memory for the policy's history (this process's session only).
HISTORY_EVENTS = 500
#: How long the shutdown waits for a running synthesis before skipping its final cleanup.
SHUTDOWN_LOCK_WAIT_S = 1.0


def process_models() -> list[ModelInfo]:
    """Every model this process holds (all sessions), for the metrics."""
    return [ModelInfo(m.engine, m.device, m.weights_bytes) for m in loaded_models()]


def policy_available() -> bool:
    """Whether ``monitoring.policy`` exists in this checkout."""
    return _policy is not None


class Service:
    """Everything one service process holds.

    Args:
        settings: The service's settings.
        store: Event store (opened from ``settings.db`` when None).
        sampler: Running sampler (started here when None).
    """

    def __init__(self, settings: ServiceSettings, *, store: Store | None = None,
                 sampler: Sampler | None = None) -> None:
        self.settings = settings
        self._own_store = store is None
        self.store = store if store is not None else open_store(
            settings.db or os.environ.get("GLMTTS_DB") or None)
        self.app_session_id = self.store.start_session("service", pid=os.getpid(),
                                                       host=settings.host, port=settings.port)
        # Import the engine (and torch) before the sampler thread starts reading torch's
        # allocator: a sampler reading a half-imported torch stops sampling.
        engine_class(settings.engine)
        self._own_sampler = sampler is None
        self.sampler = sampler if sampler is not None else Sampler(
            store=self.store, session_id=self.app_session_id).start()
        self.session = SynthesisSession(settings.engine, engine_options=settings.engine_options,
                                        device=settings.device, store=self.store,
                                        sampler=self.sampler, label="service",
                                        isolate=settings.isolate, python=settings.python)
        self.metrics = MemoryMetrics(METRICS_NAMESPACE, models=process_models)
        self.history = MemoryHistory(settings.memory_history) if (
            settings.memory_history > 0) else None
        self._records: deque[EventRecord] = deque(maxlen=HISTORY_EVENTS)
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------------ life
    @property
    def device(self) -> str:
        """The device the model runs (or will run) on."""
        return self.session.engine.device or self.session.engine.resolve_device(
            self.settings.device)

    @property
    def pending(self) -> int:
        """Syntheses waiting for the device or running."""
        with self._pending_lock:
            return self._pending

    def start_memory_history(self) -> None:
        """Start the CUDA memory history where the model runs on CUDA (no-op elsewhere)."""
        if self.history is not None and self.device.startswith("cuda"):
            self.history.start()

    def preload(self) -> EventRecord | None:
        """Load the model now (measured); return the load event if one ran."""
        with device_lock(self.device):
            record = self.session.ensure_loaded()
        self._remember(record)
        return record

    def close(self) -> None:
        """Release the model (a measured full cleanup, recorded), stop the sampler and the
        memory history, close the store. Idempotent; waits at most a few seconds for a
        synthesis that is still running (its event is committed by its own thread)."""
        if self._closed:
            return
        self._closed = True
        lock = device_lock(self.device)
        if lock.acquire(timeout=SHUTDOWN_LOCK_WAIT_S):
            lock.release()
            if self.session.loaded:
                self._observe_cleanup(self.session.cleanup("full"))
        else:
            log.warning("a synthesis is still running after %.0f s: the model is dropped "
                        "without a measured cleanup", SHUTDOWN_LOCK_WAIT_S)
        self.session.close()
        if self.history is not None:
            self.history.stop()
        if self._own_sampler:
            self.sampler.stop()
        if self._own_store:
            self.store.close()

    # ------------------------------------------------------------------------ synthesis
    @contextmanager
    def admission(self) -> Iterator[None]:
        """Count a synthesis as waiting or running; refuse when too many already are.

        Raises:
            BusyError: ``settings.max_pending`` syntheses are already waiting or running.
        """
        with self._pending_lock:
            if self._pending >= self.settings.max_pending:
                raise BusyError(f"{self._pending} syntheses are already waiting for the "
                                f"device; retry in a moment")
            self._pending += 1
        try:
            yield
        finally:
            with self._pending_lock:
                self._pending -= 1

    def synthesize(self, request: SynthesisRequest, synthesis_id: str | None = None
                   ) -> SynthesisOutcome:
        """Speak ``request`` with the session (OOM recovery included), tag its CUDA memory
        events with ``synthesis_id``, and count everything in the metrics.

        Raises:
            OutOfMemoryError: out of memory even after a full cleanup and a retry.
            GlmTtsError: the request cannot be served (typed, with a message).
        """
        synthesis_id = synthesis_id or new_synthesis_id()
        tag = f"synthesis {synthesis_id}"
        try:
            if self.history is not None:
                with self.history.tagged(tag):
                    outcome = self.session.synthesize(request)
            else:
                outcome = self.session.synthesize(request)
        except OutOfMemoryError:
            # Both attempts ran out of memory; their records went to the store, not to us.
            self.metrics.observe_oom("synthesis", 2)
            self.metrics.observe_recovery(False)
            if self.session.last_cleanup is not None:
                self._observe_cleanup(self.session.last_cleanup)
            raise
        self._observe_outcome(outcome)
        log.info("%s -> event %s", tag, outcome.record.event_id)
        return outcome

    def synthesize_wav(self, request: SynthesisRequest, synthesis_id: str | None = None
                       ) -> tuple[SynthesisOutcome, bytes]:
        """:meth:`synthesize`, then the audio as WAV bytes (one thread hop for the app)."""
        outcome = self.synthesize(request, synthesis_id)
        return outcome, wav_bytes(outcome.result.audio, outcome.result.sample_rate)

    def _observe_outcome(self, outcome: SynthesisOutcome) -> None:
        self._remember(outcome.load)
        attempts = outcome.attempts or (outcome.record,)
        for record in attempts[:-1]:
            self._remember(record)
        if outcome.recovery is not None and self.session.last_cleanup is not None:
            self._observe_cleanup(self.session.last_cleanup)
            self.metrics.observe_recovery(True)
        self._remember(attempts[-1])

    def _remember(self, record: EventRecord | None) -> None:
        if record is None:
            return
        if self.metrics.observe(record):
            self._records.append(record)

    def _observe_cleanup(self, result: CleanupResult) -> None:
        if result.event.event_id not in {r.event_id for r in self._records}:
            self._records.append(result.event)
        self.metrics.observe_cleanup(result)

    # ------------------------------------------------------------------------ cleanup
    def cleanup(self, level: str) -> tuple[CleanupResult, bool]:
        """Run a measured cleanup; return it and whether a model was loaded before."""
        loaded_before = self.session.loaded
        result = self.session.cleanup(level)
        self._observe_cleanup(result)
        return result, loaded_before

    # ------------------------------------------------------------------------ memory
    def snapshot(self) -> Snapshot:
        """Every probe of the process that holds the model now (a worker's for an engine in
        a worker), with what ``empty_cache()`` would free (CUDA)."""
        return self.session.snapshot(releasable=True)

    def recommendation(self, snapshot: Snapshot) -> Any | None:
        """The policy's recommendation now (no pending request), or None without a policy."""
        if _policy is None:
            return None
        records = sorted(self._records, key=lambda r: r.started_monotonic_s)  # oldest first
        history = _policy.history_from_records(records)
        return _policy.recommend(snapshot, history)

    def memory_history_state(self) -> dict[str, Any]:
        """Whether the CUDA memory history records, and its ring size."""
        history = self.history
        return {"recording": bool(history is not None and history.recording),
                "max_entries": history.max_entries if history is not None else 0}


def new_synthesis_id() -> str:
    """A fresh synthesis id (16 hex digits)."""
    return uuid.uuid4().hex[:16]
