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
from monitoring import Sampler, Store, Tracker, cleanup, is_out_of_memory
from monitoring.cleanup import CleanupResult
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
    """

    result: SynthesisResult
    record: EventRecord
    load: EventRecord | None
    waited_s: float
    attempts: tuple[EventRecord, ...] = ()
    recovery: str | None = None
    request: SynthesisRequest | None = None


class SynthesisSession:
    """An engine plus the measurement of everything done with it.

    Args:
        engine: Engine name (see :func:`glmtts.engines.engine_names`).
        engine_options: Passed to the engine's constructor (e.g. ``voice``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; resolved when the model loads.
        store: Event store; None records nothing durable.
        sampler: Running sampler, for NVML peaks and timeline markers.
        label: Name of this session in tables and the registry.
    """

    def __init__(self, engine: str = DEFAULT_ENGINE, *,
                 engine_options: dict[str, Any] | None = None, device: str = "auto",
                 store: Store | None = None, sampler: Sampler | None = None,
                 label: str | None = None) -> None:
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
        with self._device_turn() as waited:
            load = self.ensure_loaded()
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
                                     used)
        return self.last

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
        self.last_cleanup = result
        return result

    def close(self) -> None:
        """Drop the model and leave the registry."""
        self.engine.unload()
        with _REGISTRY_GUARD:
            _REGISTRY.discard(self)
