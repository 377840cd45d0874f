"""The service without HTTP: one synthesis session, its store, sampler, metrics and memory
history, and what each endpoint asks of them.

One service process holds one :class:`~service.concurrency.ConcurrentSession` (so one model).
Syntheses are admitted by :class:`~service.admission.Admission` as their predicted peaks fit
the memory budget (several at once on an engine that allows it, else one at a time), in
arrival order; cleanups wait until no synthesis runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from glmtts.audio import wav_bytes
from glmtts.cancel import cancellable
from glmtts.engines import engine_class
from glmtts.outcome import SynthesisOutcome
from glmtts.paths import event_store_path
from glmtts.registry import device_lock
from glmtts.request import SynthesisRequest
from glmtts.stream import Listener, streaming
from glmtts.telemetry import first_audio_histogram, new_metrics
from monitoring import Sampler, Snapshot, Store, open_store
from monitoring.allocator_history import MemoryHistory
from monitoring.cleanup import CleanupResult
from monitoring.policy import Recommendation, predict_peak, recommend
from monitoring.records import EventRecord
from service.admission import Admission, Prediction
from service.concurrency import ConcurrentSession
from service.errors import BusyError
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

#: How long the shutdown waits for a running synthesis before skipping its final cleanup.
SHUTDOWN_LOCK_WAIT_S = 1.0


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
            event_store_path(settings.db))
        self.app_session_id = self.store.start_session("service", pid=os.getpid(),
                                                       host=settings.host, port=settings.port)
        # Import the engine (and torch) before the sampler thread starts reading torch's
        # allocator: a sampler reading a half-imported torch stops sampling.
        engine_class(settings.engine)
        self._own_sampler = sampler is None
        self.sampler = sampler if sampler is not None else Sampler(
            store=self.store, session_id=self.app_session_id).start()
        self.metrics = new_metrics()
        self.first_audio = first_audio_histogram(self.metrics)
        self.session = ConcurrentSession(settings.engine, engine_options=settings.engine_options,
                                        device=settings.device, store=self.store,
                                        sampler=self.sampler, label="service",
                                        isolate=settings.isolate, python=settings.python,
                                        sinks=[self.metrics.observe])
        self.history = MemoryHistory(settings.memory_history) if (
            settings.memory_history > 0) else None
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._closed = False
        concurrent = self.session.concurrent
        self.admitter = Admission(
            self.free_bytes, budget_bytes=settings.memory_budget_bytes,
            capacity=None if concurrent else 1,
            capacity_reason=None if concurrent else self._one_at_a_time_reason())
        from service.gauges import install_gauges
        from service.idle import IdleRelease

        install_gauges(self)
        self.idle = IdleRelease(self, settings.idle_tiers).start()

    # ------------------------------------------------------------------------ life
    def _one_at_a_time_reason(self) -> str:
        engine = self.session.engine
        if engine.isolated:
            return ("the model runs in a worker process, which serves one request at a time "
                    "over its socket")
        return (f"the {self.session.engine_name} engine does not declare that one loaded model "
                f"may serve two syntheses at once")

    def free_bytes(self) -> int | None:
        """Free memory on the device the model runs on: the machine's available RAM on the
        CPU, NVML's free bytes of the GPU."""
        if self.device == "cpu":
            return self.session.tracker.probes.host.system_memory()[0]
        # only NVML's figure: no heap walk or RAM reads (asked every 0.25 s while one waits)
        return self.session.tracker.probes.snapshot(host_peak=False, system=False,
                                                    heap=False).nvml_device_free_bytes

    def predict(self, request: SynthesisRequest) -> Prediction:
        """The request's predicted demand above the loaded model: the policy's upper bound
        from this session's history, else the fixed estimate (``settings.unseen_peak_bytes``)."""
        session = self.session
        prediction = predict_peak(session.snapshot(), list(session.history),
                                  session.pending(request), session.policy_settings())
        if prediction is None:
            return Prediction(self.settings.unseen_peak_bytes, "unseen")
        return Prediction(max(1, prediction.peak_upper_bytes), "history", prediction.samples)

    @property
    def device(self) -> str:
        """The device the model runs (or will run) on."""
        return self.session.engine.device or self.session.engine.resolve_device(
            self.settings.device)

    def precision(self) -> dict[str, Any]:
        """The model's precision: as loaded (or next), as asked, and why ``auto`` chose a
        16-bit one at the last load."""
        engine = self.session.engine
        loads = [e for e in self.session.history if e.kind == "load"
                 and e.features.get("dtype") is not None]
        return {"dtype": engine.dtype_name, "dtype_requested": engine.requested_dtype,
                "dtype_reason": loads[-1].features.get("dtype_reason") if loads else None}

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
        try:
            with device_lock(self.device):
                return self.session.ensure_loaded()
        finally:  # idleness counts from a loaded model
            self.admitter.last_activity = time.monotonic()

    def close(self) -> None:
        """Release the model (a measured full cleanup, recorded), stop the sampler and the
        memory history, close the store. Idempotent; waits at most a few seconds for a
        synthesis that is still running (its event is committed by its own thread)."""
        if self._closed:
            return
        self._closed = True
        self.idle.stop()
        self.admitter.close()
        lock = device_lock(self.device)
        if lock.acquire(timeout=SHUTDOWN_LOCK_WAIT_S):
            lock.release()
            if self.session.loaded:
                self.session.cleanup("full")
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
                retry = self.admitter.retry_after_s()
                wait = self.admitter.estimated_wait_s()
                raise BusyError(f"{self._pending} syntheses are already waiting or running "
                                f"(--max-pending {self.settings.max_pending}); "
                                + (f"the estimated wait is {wait:.1f} s from measured "
                                   f"durations" if wait is not None else
                                   "no duration measured yet") + f": retry in {retry} s",
                                retry_after_s=retry)
            self._pending += 1
        try:
            yield
        finally:
            with self._pending_lock:
                self._pending -= 1

    def synthesize(self, request: SynthesisRequest, synthesis_id: str | None = None
                   ) -> SynthesisOutcome:
        """Speak ``request`` with the session (OOM recovery included), tag its CUDA memory
        events with ``synthesis_id`` (the session's sinks count everything in the metrics).

        Raises:
            OutOfMemoryError: out of memory even after a full cleanup and a retry.
            GlmTtsError: the request cannot be served (typed, with a message).
        """
        synthesis_id = synthesis_id or new_synthesis_id()
        tag = f"synthesis {synthesis_id}"
        if self.history is not None:
            with self.history.tagged(tag):
                outcome = self.session.synthesize(request)
        else:
            outcome = self.session.synthesize(request)
        log.info("%s -> event %s", tag, outcome.record.event_id)
        return outcome

    def synthesize_wav(self, request: SynthesisRequest, synthesis_id: str | None = None,
                       cancel: threading.Event | None = None,
                       encode: Callable[[np.ndarray, int], bytes] = wav_bytes,
                       on_audio: Listener | None = None) -> tuple[SynthesisOutcome, bytes]:
        """:meth:`synthesize`, then the audio encoded by ``encode(samples, rate)`` (WAV bytes
        by default; one thread hop for the app, and the encoding runs after the device is
        free). Setting ``cancel`` stops the synthesis at its next sentence or segment boundary
        (:class:`glmtts.cancel.Cancelled`, recorded as ``cancelled``); ``on_audio`` receives
        each sentence as it is made (:mod:`glmtts.stream`)."""
        cancel = cancel or threading.Event()
        with self.admitter.admit(self.predict(request), cancel), cancellable(cancel), \
                streaming(on_audio):
            outcome = self.synthesize(request, synthesis_id)
        return outcome, encode(outcome.result.audio, outcome.result.sample_rate)

    # ------------------------------------------------------------------------ cleanup
    def cleanup(self, level: str) -> tuple[CleanupResult, bool]:
        """Run a measured cleanup; return it and whether a model was loaded before."""
        loaded_before = self.session.loaded
        return self.session.cleanup(level), loaded_before

    # ------------------------------------------------------------------------ memory
    def snapshot(self) -> Snapshot:
        """Every probe of the process that holds the model now (a worker's for an engine in
        a worker), with what ``empty_cache()`` would free (CUDA)."""
        return self.session.snapshot(releasable=True)

    def recommendation(self, snapshot: Snapshot) -> Recommendation:
        """The policy's recommendation now (no pending request), from the session's history."""
        return recommend(snapshot, self.session.history,
                         settings=self.session.policy_settings())

    def admission_state(self) -> dict[str, Any]:
        """The admission's budget, queue and records (:mod:`service.admission`)."""
        return {**self.admitter.state(), "unseen_peak_bytes": self.settings.unseen_peak_bytes,
                "concurrent": self.session.concurrent}

    def idle_state(self) -> dict[str, Any]:
        """The idle release's tiers and countdown (:mod:`service.idle`)."""
        return self.idle.state()

    def memory_history_state(self) -> dict[str, Any]:
        """Whether the CUDA memory history records, and its ring size."""
        history = self.history
        return {"recording": bool(history is not None and history.recording),
                "max_entries": history.max_entries if history is not None else 0}


def new_synthesis_id() -> str:
    """A fresh synthesis id (16 hex digits)."""
    return uuid.uuid4().hex[:16]
