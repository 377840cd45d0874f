"""The synthesis session: one engine's model, loaded lazily, every use measured and recorded.

A session owns one engine (and so at most one copy of its model), a :class:`monitoring.Tracker`
that measures each load, synthesis and cleanup, and writes them to the event store. The UI keeps
one session per browser session; the process-wide registry (weak references) lets any of them
see how many models the process holds, and one lock per device serialises syntheses so that two
sessions never stack their peaks on one GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from glmtts.auto_precision import load_features, session_decide
from glmtts.engines import DEFAULT_ENGINE, create_engine
from glmtts.engines.base import Engine
from glmtts.errors import GlmTtsError, OutOfMemoryError, is_out_of_memory
from glmtts.outcome import CleanupOption, SynthesisOutcome, oom_recovery
from glmtts.registry import device_lock, register, unregister
from glmtts.request import SynthesisRequest, SynthesisResult
from glmtts.say import N_, Say
from glmtts.worker.engine import WorkerEngine, isolated_by_default
from monitoring import Probes, Sampler, Store, Tracker, cleanup, default_probes
from monitoring.cleanup import CleanupResult
from monitoring.imported import imported_torch
from monitoring.policy import (
    HistoryEvent,
    PendingRequest,
    PolicySettings,
    Recommendation,
    lighter_request,
    recommend,
)
from monitoring.records import EventRecord
from monitoring.release import trim_if_grown

log = logging.getLogger(__name__)

#: What the policy sees of a request: its size (memory grows with the text) and the features
#: that make one configuration (the fit, the leak trend and the switch rules go by these).
SIZE_FEATURE = "text_chars"
CONFIG_FEATURES = ("sample_rate", "use_kv_cache", "voice", "reference_audio", "dtype")


class SynthesisSession:
    """An engine plus the measurement of everything done with it.

    Args:
        engine: Engine name (see :func:`glmtts.engines.engine_names`).
        engine_options: Passed to the engine's constructor (e.g. ``voice``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; resolved when the model loads.
        store: Event store; None records nothing durable.
        sampler: Running sampler, for NVML peaks and timeline markers.
        label: Name of this session in tables and the registry.
        policy_mode: ``advise`` (recommend only), ``auto`` (run a required cleanup before the
            synthesis, recorded) or ``off``.
        isolate: Run the engine in a worker process (:mod:`glmtts.worker`); None: the
            engine's default (glm-tts runs in a worker, the others in this process).
        python: The worker's interpreter (None: ``$GLMTTS_PYTHON``, then the checkout's
            ``.venv``, then this one).
        sinks: Receivers of every event record besides the store and this session's history
            (the process's Prometheus metrics: the app and the service pass the same).

    With an engine in a worker, every record measures the worker: its host RSS and NVML
    figures by PID, its torch allocator over the protocol; :attr:`worker_sampler` samples it
    live (10 Hz) for the timeline.
    """

    #: Events kept in memory for the policy (the store keeps them all).
    HISTORY = 400

    def __init__(self, engine: str = DEFAULT_ENGINE, *,
                 engine_options: dict[str, Any] | None = None, device: str = "auto",
                 store: Store | None = None, sampler: Sampler | None = None,
                 label: str | None = None, policy_mode: str = "advise",
                 isolate: bool | None = None, python: str | None = None,
                 sinks: Iterable[Callable[[EventRecord], object]] = ()) -> None:
        self.engine_name = engine
        self.engine_options = dict(engine_options or {})
        self.isolate = isolate
        self.python = python
        self.sinks = list(sinks)
        self.engine: Engine = self._build(engine, self.engine_options)
        self.device = device
        self.store = store
        self.sampler = sampler
        session_id = None
        if store is not None:
            session_id = store.start_session(label, engine=engine, device=device)
        self.session_id = session_id
        self.label = label or (session_id[:8] if session_id else f"session-{id(self):x}")
        self.worker_sampler: Sampler | None = None
        self.tracker = self._tracker_for(self.engine)
        self.synthesis_count = 0
        self.last: SynthesisOutcome | None = None
        self.last_cleanup: CleanupResult | None = None
        self.policy_mode = policy_mode
        self.history: list[HistoryEvent] = []
        #: Events recorded so far (grows forever, unlike :attr:`history`): tells a cached
        #: recommendation that something happened since.
        self.events_recorded = 0
        register(self)

    # ----------------------------------------------------------------- model life
    def _build(self, engine: str, options: dict[str, Any]) -> Engine:
        isolate = self.isolate if self.isolate is not None else isolated_by_default(engine)
        if isolate:
            return WorkerEngine(engine, options, python=self.python)
        return create_engine(engine, **options)

    def _tracker_for(self, engine: Engine) -> Tracker:
        """A tracker that measures the process holding ``engine``'s model (a worker's own
        probes and live sampler for an isolated engine)."""
        if self.worker_sampler is not None:
            self.worker_sampler.stop()
            self.worker_sampler = None
        if not isinstance(engine, WorkerEngine):
            return Tracker(sampler=self.sampler, store=self.store, session_id=self.session_id,
                           sinks=[self._remember, *self.sinks])
        probes = Probes(nvml=default_probes().nvml, pid=lambda: engine.pid,
                        allocator=engine.allocator())
        if self.sampler is not None:
            self.worker_sampler = Sampler(probes, interval_s=self.sampler.interval_s,
                                          maxlen=self.sampler.maxlen).start()
        return Tracker(probes, sampler=self.worker_sampler, store=self.store,
                       session_id=self.session_id, sinks=[self._remember, *self.sinks])

    @property
    def loaded(self) -> bool:
        return self.engine.loaded

    @property
    def isolated(self) -> bool:
        """Whether the model runs in a worker process."""
        return self.engine.isolated

    def ensure_loaded(self, request: SynthesisRequest | None = None) -> EventRecord | None:
        """Load the model if it is not loaded; return the measured load event, if one ran.
        An ``auto`` precision is decided first (:mod:`glmtts.auto_precision`), for
        ``request`` when given; the event records the precision and why.

        For an engine in a worker, the event includes starting the worker when none runs
        (``worker_start_s``): after a restart that is part of what coming back costs."""
        if self.engine.loaded:
            return None
        target = self.engine.resolve_device(self.device)
        choice = session_decide(self, target, request)
        with self.tracker.track("load", f"load {self.engine_name} on {target}",
                                engine=self.engine_name, device=target) as handle:
            self.engine.load(target)
            handle.set(weights_bytes=self.engine.model_bytes(),
                       **load_features(self.engine, choice))
            if isinstance(self.engine, WorkerEngine):
                start = self.engine.pop_start_s()
                handle.set(worker_pid=self.engine.pid, worker_python=self.engine.python,
                           worker_start_s=None if start is None else round(start, 4))
        return handle.record

    def _reload_for(self, request: SynthesisRequest) -> EventRecord | None:
        """Measure an engine's partial reload for ``request`` (e.g. a sample-rate switch)."""
        if not self.engine.loaded:
            self.engine.reload_for(request)  # only picks what the next load brings up
            return None
        if not self.engine.needs_reload(request):
            return None
        with self.tracker.track("load", f"reload {self.engine_name} for {request.sample_rate} Hz",
                                engine=self.engine_name, device=self.engine.device,
                                reason="sample_rate") as handle:
            switch = self.engine.reload_for(request)
            details = dataclasses.asdict(switch) if dataclasses.is_dataclass(switch) else {}
            handle.set(weights_bytes=self.engine.model_bytes(), **details)
        return handle.record

    def switch_engine(self, engine: str, engine_options: dict[str, Any] | None = None, *,
                      isolate: bool | None = None, python: str | None = None,
                 sinks: Iterable[Callable[[EventRecord], object]] = ()) -> None:
        """Use another engine, voice, interpreter or isolation from now on (the current model
        is dropped and its worker ended, unmeasured; use :meth:`cleanup` first to measure what
        that frees).

        Raises:
            GlmTtsError: the new engine cannot be created (the old one stays).
        """
        old = self.isolate, self.python
        self.isolate, self.python = isolate, python
        try:
            new = self._build(engine, dict(engine_options or {}))
        except BaseException:
            self.isolate, self.python = old
            raise
        self.engine.close()
        self.engine = new
        self.engine_name = engine
        self.engine_options = dict(engine_options or {})
        self.tracker = self._tracker_for(new)

    # ----------------------------------------------------------------- synthesis
    @contextmanager
    def _device_turn(self) -> Iterator[float]:
        device = self.engine.device or self.engine.resolve_device(self.device)
        lock = device_lock(device)
        t0 = time.perf_counter()
        with lock:
            yield time.perf_counter() - t0

    def _attempt(self, request: SynthesisRequest, retry_of: str | None = None
                 ) -> tuple[SynthesisResult | None, EventRecord, str | None]:
        """One tracked synthesis. Returns ``(result, record, None)``, or ``(None, record,
        error)`` on out-of-memory; any other exception propagates (its event is recorded).
        ``retry_of``: the event this attempt retries after an out-of-memory error."""
        label = request.text if len(request.text) <= 40 else request.text[:37] + "..."
        features = {**request.features(), "engine": self.engine_name,
                    "device": self.engine.device}
        if self.engine.dtype_name is not None:  # runs in two precisions are two configurations
            features["dtype"] = self.engine.dtype_name
        if retry_of is not None:
            features["retry_of"] = retry_of
        handle = self.tracker.track("synthesis", label, **features)
        try:
            with handle:
                try:
                    result = self.engine.synthesize(request)
                except GlmTtsError as exc:  # a worker fault (the next call starts a fresh
                    outcome = getattr(exc, "outcome", None)  # worker) or a cancellation:
                    if outcome:  # recorded with its outcome
                        handle.set(outcome=outcome)
                    raise
                if not self.engine.isolated:  # a worker trims its own heap
                    handle.set(heap_trimmed_bytes=trim_if_grown())
                handle.set(audio_s=round(result.duration_s, 4), wall_s=round(result.wall_s, 4),
                           rtf=result.rtf, seed=result.metadata.get("seed"),
                           sample_rate=result.sample_rate, timings=result.timings)
                worker = result.metadata.get("worker")
                if worker:
                    handle.set(worker_pid=worker.get("pid"))
        except (MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            error = f"{type(exc).__name__}: {exc}"
        else:
            assert handle.record is not None
            return result, handle.record, None
        # Out of the except block: the traceback, its frames and their tensors are gone.
        assert handle.record is not None
        return None, handle.record, error

    def lighter(self, request: SynthesisRequest) -> SynthesisRequest | None:
        """The configuration of ``request`` that needs less memory, as the engine declares it
        (``Capabilities.lighter``; the policy advises the same), or None."""
        pending = self.pending(request)
        lighter = lighter_request(pending, self.policy_settings().lighter)
        if lighter is None:
            return None
        before = dict(pending.features)
        changes = {name: value for name, value in lighter.features if before.get(name) != value}
        return dataclasses.replace(request, **changes)

    def synthesize(self, request: SynthesisRequest, *, recover: bool = True) -> SynthesisOutcome:
        """Load if needed, then speak ``request``; every step measured and recorded.

        On out-of-memory (``torch.cuda.OutOfMemoryError``, ``MemoryError``): every reference
        to the failed call is dropped, a full cleanup runs, and the request is retried once,
        with a lighter configuration where one exists; both attempts are recorded.

        Raises:
            OutOfMemoryError: the retry failed too (or ``recover`` is False).
            GlmTtsError: bad request, voice or device (typed, with a message for the user).
        """
        self.engine.check(request)
        rec = auto = None
        if self.policy_mode != "off":  # outside the device turn: a cleanup takes it too
            rec = self.recommend(request)
            if rec.should_act:
                auto = self.cleanup(rec.action)
        with self._device_turn() as waited:
            reload = self._reload_for(request)
            load = self.ensure_loaded(request) or reload
            result, record, error = self._attempt(request)
            attempts = [record]
            recovery = None
            used = request
            if error is not None:
                if not recover:
                    raise OutOfMemoryError(Say("out of memory: {error}", error=error))
                freed = self._cleanup_unlocked("full")
                used = self.lighter(request) or request
                reload = self.ensure_loaded(used)
                load = load or reload
                result, record, error2 = self._attempt(used, retry_of=record.event_id)
                attempts.append(record)
                if error2 is not None:
                    raise OutOfMemoryError(oom_recovery(error, freed, used is not request,
                                                        error2))
                recovery = oom_recovery(error, freed, used is not request)
        assert result is not None
        self.synthesis_count += 1
        self.last = SynthesisOutcome(result, record, load, waited, tuple(attempts), recovery,
                                     used, rec, auto)
        return self.last

    # ----------------------------------------------------------------- policy
    def _remember(self, record: EventRecord | None) -> None:
        """Tracker sink: keep the record for the policy (the newest :attr:`HISTORY`)."""
        if record is not None:
            self.history.append(HistoryEvent.from_record(record))
            del self.history[:-self.HISTORY]
            self.events_recorded += 1

    def pending(self, request: SynthesisRequest) -> PendingRequest:
        """The policy's view of ``request`` on this session's engine (resolved values)."""
        caps = self.engine.capabilities
        features = request.features()
        features["sample_rate"] = request.sample_rate or caps.native_sample_rate
        features["dtype"] = self.engine.dtype_name
        return PendingRequest(
            engine=self.engine_name, size=features[SIZE_FEATURE],
            device=self.engine.device or self.engine.resolve_device(self.device),
            features=tuple((name, features[name]) for name in CONFIG_FEATURES))

    def policy_settings(self) -> PolicySettings:
        """Policy settings for this engine: which switches make its state stale, as its
        capabilities declare, and whether a restart is possible (an engine in a worker)."""
        rules = tuple((name, level, why) for name, (level, why)
                      in self.engine.capabilities.invalidates.items())
        caps = self.engine.capabilities
        lighter = tuple((name, heavy, light, words)
                        for name, (heavy, light, words) in caps.lighter.items())
        return PolicySettings(mode=self.policy_mode, switch_rules=rules,
                              restart_available=self.engine.isolated,
                              size_feature=SIZE_FEATURE, size_unit=N_("characters"),
                              lighter=lighter)

    def recommend(self, request: SynthesisRequest | None = None, *, record: bool = True
                  ) -> Recommendation:
        """What the policy advises before ``request`` (or now), from a fresh snapshot and this
        session's history; an advised or required recommendation is recorded in the store."""
        snapshot = self.snapshot(releasable=True)
        pending = self.pending(request) if request is not None else None
        rec = recommend(snapshot, self.history, pending, self.policy_settings())
        if record and rec.urgency != "info" and self.store is not None:
            self.store.log_event("recommendation", label=rec.summary[:120],
                                 session_id=self.session_id, features=rec.to_features())
        return rec

    def snapshot(self, *, releasable: bool = False) -> Any:
        """Every probe of the process that holds the model, now (a worker's for an isolated
        engine). ``releasable`` walks the CUDA allocator's segments only where CUDA is in
        use."""
        probes = self.tracker.probes
        if releasable and probes.allocator.unavailable_reason is not None:
            releasable = False
        if releasable and not isinstance(self.engine, WorkerEngine):
            torch = imported_torch()
            releasable = torch is not None and torch.cuda.is_initialized()
        return probes.snapshot(releasable=releasable)

    def cleanup_options(self) -> list[CleanupOption]:
        """The cleanup levels this session offers now, each with what it would free (from a
        fresh reading of the model's process) and its measured cost of coming back."""
        snap = self.snapshot()
        gpu = snap.torch_reserved_bytes is not None
        cache = (snap.torch_reserved_bytes - (snap.torch_allocated_bytes or 0) if gpu
                 else snap.host_heap_releasable_bytes)  # CPU: glibc's free heap (estimate)
        loads = [e for e in self.history if e.kind == "load" and e.ok]
        reload_s = next((e.duration_s for e in reversed(loads)
                         if e.features.get("reason") is None), None)
        starts = [e.features.get("worker_start_s") for e in loads
                  if e.features.get("worker_start_s") is not None]
        start_s = starts[-1] if starts else getattr(self.engine, "last_start_s", None)
        weights = self.engine.model_bytes() if self.engine.loaded else 0
        options = [
            CleanupOption("light", cache,
                          "the allocator's unused cache" if gpu else
                          "freed memory the C allocator keeps (an estimate)",
                          0.0),
            CleanupOption("full", None if weights is None else weights + (cache or 0),
                          "the model's weights and caches" + (" and the allocator's cache"
                                                              if gpu else ""),
                          reload_s if self.engine.loaded else 0.0),
        ]
        if self.isolated:
            held = [v for v in (snap.host_rss_bytes, snap.nvml_process_used_bytes)
                    if v is not None]
            cost = None if reload_s is None or start_s is None else start_s + reload_s
            options.append(CleanupOption(
                "restart", sum(held) if held else None,
                "everything the worker holds: host RSS" + (", GPU memory (NVML) with the CUDA "
                                                           "context" if gpu else ""),
                cost if getattr(self.engine, "pid", None) else 0.0))
        return options

    # ----------------------------------------------------------------- cleanup
    #: Cleanup levels, cheapest first (``restart``: engines in a worker only).
    LEVELS = ("light", "full", "restart")

    def cleanup(self, level: str = "full") -> CleanupResult:
        """Free memory and measure it.

        ``light``: gc, ``torch.cuda.empty_cache()``, ``malloc_trim`` in the process that
        holds the model; the model stays.
        ``full``: drop this session's model and engine caches (for GLM-TTS also upstream's
        modules and its mel/window caches), then the light steps; the next synthesis reloads.
        ``restart``: end the engine's worker process, which frees everything it held (the
        CUDA context and what only NVML sees included); the next synthesis starts a fresh
        worker and reloads.

        Raises:
            ValueError: an unknown level, or ``restart`` for an engine in this process.
        """
        if level not in self.LEVELS:
            raise ValueError(f"cleanup level must be one of {', '.join(self.LEVELS)}, "
                             f"not {level!r}")
        if level == "restart" and not self.isolated:
            raise ValueError("a restart ends an engine worker, and this engine runs in the "
                             "app's own process: run it isolated (in a worker) to restart it")
        with self._device_turn():
            return self._cleanup_unlocked(level)

    def _cleanup_unlocked(self, level: str) -> CleanupResult:
        engine = self.engine
        if isinstance(engine, WorkerEngine):
            action = engine.restart if level == "restart" else (
                lambda: engine.cleanup(level))
            result = cleanup.measured(level, action, self.tracker)
        elif level == "full":
            result = cleanup.full(engine.unload, tracker=self.tracker)
        else:
            result = cleanup.light(tracker=self.tracker)
        self.last_cleanup = result
        return result

    def close(self) -> None:
        """Drop the model (and end its worker), stop the worker's sampler, leave the
        registry."""
        self.engine.close()
        if self.worker_sampler is not None:
            self.worker_sampler.stop()
        unregister(self)
