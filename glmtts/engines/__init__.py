"""TTS engines, created by name. Engine modules are imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from glmtts.engines.base import Capabilities, Engine
from glmtts.errors import UnknownEngineError
from glmtts.say import Say

#: name -> "module:class"
_REGISTRY: dict[str, str] = {
    "piper": "glmtts.engines.piper:PiperEngine",
    "glm-tts": "glmtts.engines.glm_tts:GlmTtsEngine",
    "twin": "glmtts.engines.twin:TwinEngine",
}
DEFAULT_ENGINE = "piper"
#: name -> "module:function" saying why the engine cannot run here (None when it can), from a
#: module that does not import the engine's model code (torch: ~1.5 s), or None for an engine
#: that runs anywhere. Each answers what the engine class's ``unavailable_reason`` answers
#: (a test checks it): the app lists every engine on its first page without loading them.
_AVAILABILITY: dict[str, str | None] = {
    "piper": None,
    "glm-tts": "glmtts.engines.glm_tts.checkout:engine_problem",
    "twin": None,
}

#: Registered engines whose constructor takes ``dtype`` (a test checks it against the classes).
_TAKES_DTYPE = frozenset({"glm-tts", "twin"})


def takes_dtype(name: str) -> bool:
    """Whether the engine ``name`` has a precision option, without importing its model code
    for a registered engine."""
    if name in _REGISTRY:
        return name in _TAKES_DTYPE
    import inspect

    return "dtype" in inspect.signature(engine_class(name).__init__).parameters


def engine_names() -> list[str]:
    """Names of every registered engine, default first."""
    return sorted(_REGISTRY, key=lambda n: (n != DEFAULT_ENGINE, n))


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name`` (its module is imported now), or named by an
    import path ``package.module:Class`` (an engine of your own, or a test's).

    Raises:
        UnknownEngineError: no engine has that name.
    """
    target = _REGISTRY.get(name)
    if target is None and ":" in name:
        module, _, cls = name.partition(":")
        try:
            found = getattr(importlib.import_module(module), cls, None)
        except ImportError as exc:
            raise UnknownEngineError(f"cannot import the engine {name!r}: {exc}") from None
        if isinstance(found, type) and issubclass(found, Engine):
            return found
        raise UnknownEngineError(f"{name!r} is not an engine class")
    if target is None:
        raise UnknownEngineError(Say("unknown engine {name}; available: {names}",
                                     name=repr(name), names=", ".join(engine_names())))
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def engine_problem(name: str) -> str | None:
    """Why the engine ``name`` cannot run here (None when it can), importing its model code
    only for an engine not listed in :data:`_AVAILABILITY`."""
    if name not in _AVAILABILITY:
        return engine_class(name).unavailable_reason()
    target = _AVAILABILITY[name]
    if target is None:
        return None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)()


def engine_status() -> dict[str, str | None]:
    """Every engine name -> why it cannot run here (None when it can)."""
    return {name: engine_problem(name) for name in engine_names()}


def create_engine(name: str = DEFAULT_ENGINE, **options: Any) -> Engine:
    """Create (not load) the engine called ``name``.

    Raises:
        UnknownEngineError: no engine has that name.
    """
    return engine_class(name)(**options)


__all__ = ["DEFAULT_ENGINE", "Capabilities", "Engine", "create_engine", "engine_class",
           "engine_names", "engine_problem", "engine_status", "takes_dtype"]
