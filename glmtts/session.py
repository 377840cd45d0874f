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
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from glmtts.device import resolve_device
from glmtts.engines import DEFAULT_ENGINE, create_engine
from glmtts.engines.base import Engine
from glmtts.errors import OutOfMemoryError
from glmtts.request import SynthesisRequest, SynthesisResult
from monitoring import Sampler, Store, Tracker, cleanup, is_out_of_memory, take_snapshot
from monitoring.cleanup import CleanupResult
from monitoring.policy import (
    HistoryEvent,
    PendingRequest,
    PolicySettings,
    Recommendation,
    recommend,
)
from monitoring.records import EventRecord

log = logging.getLogger(__name__)

_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()
_REGISTRY: weakref.WeakSet[SynthesisSession] = weakref.WeakSet()
_REGISTRY_GUARD = threading.Lock()


def _freed_text(result: CleanupResult) -> str:
    parts = [(result.nvml_process_freed_bytes, "GPU memory (NVML, this process)"),
             (result.torch_reserved_freed_bytes, "torch reserved"),
             (result.host_rss_freed_bytes, "host RSS")]
    return ", ".join(f"{v / 2**20:.1f} MiB {name}" for v, name in parts if v is not None) or (
        "an unmeasured amount")


def device_lock(device: str) -> threading.Lock:
    """The process-wide lock of ``device`` (``cpu``, ``cuda``, ``cuda:1``...)."""
    key = "cuda:0" if device == "cuda" else device
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class LoadedModel:
    """One model the process holds, as the registry sees it."""

    session_label: str
    engine: str
    voice: str | None
    device: str
    weights_bytes: int | None


def loaded_models() -> list[LoadedModel]:
    """Every model currently loaded by any live session of this process."""
    with _REGISTRY_GUARD:
        sessions = list(_REGISTRY)
    out = []
    for s in sessions:
        engine = s.engine
        if engine.loaded and engine.device is not None:
            out.append(LoadedModel(s.label, engine.name, getattr(engine, "voice_name", None),
                                   engine.device, engine.model_bytes()))
    return out


@dataclass(frozen=True)
class SynthesisOutcome:
    """What one call of :meth:`SynthesisSession.synthesize` produced.

    Attributes:
        result: The audio and its timings.
        record: The measured synthesis event (of the attempt that succeeded).
        load: The measured load event, when this call had to load the model first.
        waited_s: Seconds spent waiting for another session's synthesis on the same device.
        attempts: Every attempt's synthesis event, failed ones included.
        recovery: What happened when the first attempt ran out of memory, in plain words;
            None when it did not.
        request: The request that produced ``result`` (lighter than asked after a recovery).
        recommendation: What the policy said before this synthesis (None when it is off).
        auto_cleanup: The cleanup that auto mode ran before this synthesis, if any.
    """

    result: SynthesisResult
    record: EventRecord
    load: EventRecord | None
    waited_s: float
    attempts: tuple[EventRecord, ...] = ()
    recovery: str | None = None
    request: SynthesisRequest | None = None
    recommendation: Recommendation | None = None
    auto_cleanup: CleanupResult | None = None


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
    """

    #: Events kept in memory for the policy (the store keeps them all).
    HISTORY = 400

    def __init__(self, engine: str = DEFAULT_ENGINE, *,
                 engine_options: dict[str, Any] | None = None, device: str = "auto",
                 store: Store | None = None, sampler: Sampler | None = None,
                 label: str | None = None, policy_mode: str = "advise") -> None:
        self.engine_name = engine
        self.engine_options = dict(engine_options or {})
        self.engine: Engine = create_engine(engine, **self.engine_options)
        self.device = device
        self.store = store
        self.sampler = sampler
        session_id = None
        if store is not None:
            session_id = store.start_session(label, engine=engine, device=device)
        self.session_id = session_id
        self.label = label or (session_id[:8] if session_id else f"session-{id(self):x}")
        self.tracker = Tracker(sampler=sampler, store=store, session_id=session_id)
        self.synthesis_count = 0
        self.last: SynthesisOutcome | None = None
        self.last_cleanup: CleanupResult | None = None
        self.policy_mode = policy_mode
        self.history: list[HistoryEvent] = []
        with _REGISTRY_GUARD:
            _REGISTRY.add(self)

    # ----------------------------------------------------------------- model life
    @property
    def loaded(self) -> bool:
        return self.engine.loaded

    def ensure_loaded(self) -> EventRecord | None:
        """Load the model if it is not loaded; return the measured load event, if one ran."""
        if self.engine.loaded:
            return None
        target = resolve_device(self.device)
        with self.tracker.track("load", f"load {self.engine_name} on {target}",
                                engine=self.engine_name, device=target) as handle:
            self.engine.load(target)
            handle.set(weights_bytes=self.engine.model_bytes())
        self._remember(handle.record)
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
        self._remember(handle.record)
        return handle.record

    def switch_engine(self, engine: str, engine_options: dict[str, Any] | None = None) -> None:
        """Use another engine or voice from now on (the current model is dropped, unmeasured;
        use :meth:`cleanup` first to measure what that frees)."""
        new = create_engine(engine, **dict(engine_options or {}))
        self.engine.unload()
        self.engine = new
        self.engine_name = engine
        self.engine_options = dict(engine_options or {})

    # ----------------------------------------------------------------- synthesis
    @contextmanager
    def _device_turn(self) -> Iterator[float]:
        device = self.engine.device or resolve_device(self.device)
        lock = device_lock(device)
        t0 = time.perf_counter()
        with lock:
            yield time.perf_counter() - t0

    def _attempt(self, request: SynthesisRequest
                 ) -> tuple[SynthesisResult | None, EventRecord, str | None]:
        """One tracked synthesis. Returns ``(result, record, None)``, or ``(None, record,
        error)`` on out-of-memory; any other exception propagates (its event is recorded)."""
        label = request.text if len(request.text) <= 40 else request.text[:37] + "..."
        features = {**request.features(), "engine": self.engine_name,
                    "device": self.engine.device}
        handle = self.tracker.track("synthesis", label, **features)
        try:
            with handle:
                result = self.engine.synthesize(request)
                handle.set(audio_s=round(result.duration_s, 4), wall_s=round(result.wall_s, 4),
                           rtf=result.rtf, seed=result.metadata.get("seed"),
                           sample_rate=result.sample_rate, timings=result.timings)
        except (MemoryError, RuntimeError) as exc:
            self._remember(handle.record)
            if not is_out_of_memory(exc):
                raise
            error = f"{type(exc).__name__}: {exc}"
        except BaseException:
            self._remember(handle.record)
            raise
        else:
            self._remember(handle.record)
            assert handle.record is not None
            return result, handle.record, None
        # Out of the except block: the traceback, its frames and their tensors are gone.
        assert handle.record is not None
        return None, handle.record, error

    def lighter(self, request: SynthesisRequest) -> SynthesisRequest | None:
        """A configuration of ``request`` that needs less memory, or None (KV cache off)."""
        if request.use_kv_cache and self.engine.capabilities.reason("use_kv_cache") is None:
            return dataclasses.replace(request, use_kv_cache=False)
        return None

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
            load = self.ensure_loaded() or reload
            result, record, error = self._attempt(request)
            attempts = [record]
            recovery = None
            used = request
            if error is not None:
                if not recover:
                    raise OutOfMemoryError(f"out of memory: {error}")
                freed = self._cleanup_unlocked("full")
                used = self.lighter(request) or request
                reload = self.ensure_loaded()
                load = load or reload
                result, record, error2 = self._attempt(used)
                attempts.append(record)
                change = "with the KV cache off" if used is not request else "unchanged"
                recovery = (f"Out of memory on the first attempt ({error}). A full cleanup freed "
                            f"{_freed_text(freed)} in {freed.duration_s:.2f} s; the retry ran "
                            f"{change}")
                if error2 is not None:
                    raise OutOfMemoryError(f"{recovery} and ran out of memory again "
                                           f"({error2}). Shorten the text or free memory "
                                           f"held by other processes.")
                recovery += " and succeeded."
        assert result is not None
        self.synthesis_count += 1
        self.last = SynthesisOutcome(result, record, load, waited, tuple(attempts), recovery,
                                     used, rec, auto)
        return self.last

    # ----------------------------------------------------------------- policy
    def _remember(self, record: EventRecord | None) -> None:
        if record is not None:
            self.history.append(HistoryEvent.from_record(record))
            del self.history[:-self.HISTORY]

    def pending(self, request: SynthesisRequest) -> PendingRequest:
        """The policy's view of ``request`` on this session's engine (resolved values)."""
        caps = self.engine.capabilities
        return PendingRequest.from_features(
            {**request.features(), "engine": self.engine_name},
            device=self.engine.device or resolve_device(self.device),
            sample_rate=request.sample_rate or caps.native_sample_rate)

    def policy_settings(self) -> PolicySettings:
        """Policy settings for this engine: Piper keeps no cache keyed by sample rate (its
        resampling kernels are keyed by the rates), so only an engine or voice change counts."""
        invalidating = (("engine", "voice") if self.engine_name == "piper"
                        else PolicySettings.cache_invalidating_features)
        return PolicySettings(mode=self.policy_mode, cache_invalidating_features=invalidating)

    def recommend(self, request: SynthesisRequest | None = None, *, record: bool = True
                  ) -> Recommendation:
        """What the policy advises before ``request`` (or now), from a fresh snapshot and this
        session's history; an advised or required recommendation is recorded in the store."""
        import sys

        torch = sys.modules.get("torch")
        cuda = torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
        snapshot = take_snapshot(releasable=cuda)
        pending = self.pending(request) if request is not None else None
        rec = recommend(snapshot, self.history, pending, self.policy_settings())
        if record and rec.urgency != "info" and self.store is not None:
            self.store.log_event("recommendation", label=rec.summary[:120],
                                 session_id=self.session_id, features=rec.to_features())
        return rec

    # ----------------------------------------------------------------- cleanup
    def cleanup(self, level: str = "full") -> CleanupResult:
        """Free memory and measure it.

        ``light``: gc, ``torch.cuda.empty_cache()``, ``malloc_trim``; the model stays.
        ``full``: drop this session's model and engine caches, then the light steps; the next
        synthesis reloads.
        """
        if level not in ("light", "full"):
            raise ValueError(f"cleanup level must be 'light' or 'full', not {level!r}")
        with self._device_turn():
            return self._cleanup_unlocked(level)

    def _cleanup_unlocked(self, level: str) -> CleanupResult:
        if level == "full":
            result = cleanup.full(self.engine.unload, tracker=self.tracker)
        else:
            result = cleanup.light(tracker=self.tracker)
        self._remember(result.event)
        self.last_cleanup = result
        return result

    def close(self) -> None:
        """Drop the model and leave the registry."""
        self.engine.unload()
        with _REGISTRY_GUARD:
            _REGISTRY.discard(self)
