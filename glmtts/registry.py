"""What the whole process holds: one lock per device (two sessions never stack their peaks on
one GPU) and a registry of live synthesis sessions (weak references), so that any of them can
tell how many models the process holds and their memory."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()
_REGISTRY: weakref.WeakSet[Any] = weakref.WeakSet()
_REGISTRY_GUARD = threading.Lock()


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
    worker_pid: int | None = None
    #: Precision of the weights (``fp32``, ``bf16``, ``fp16``); None for an engine without one.
    dtype: str | None = None
    #: The ``dtype`` option as given (``auto`` when the precision was chosen at load).
    dtype_requested: str | None = None


def loaded_models() -> list[LoadedModel]:
    """Every model currently loaded by any live session of this process."""
    with _REGISTRY_GUARD:
        sessions = list(_REGISTRY)
    out = []
    for s in sessions:
        engine = s.engine
        if engine.loaded and engine.device is not None:
            out.append(LoadedModel(s.label, engine.name, getattr(engine, "voice_name", None),
                                   engine.device, engine.model_bytes(),
                                   getattr(engine, "pid", None), engine.dtype_name,
                                   engine.requested_dtype))
    return out


def register(session: Any) -> None:
    """Count ``session`` (a :class:`~glmtts.session.SynthesisSession`) among the live ones."""
    with _REGISTRY_GUARD:
        _REGISTRY.add(session)


def unregister(session: Any) -> None:
    """Stop counting ``session`` (idempotent)."""
    with _REGISTRY_GUARD:
        _REGISTRY.discard(session)
