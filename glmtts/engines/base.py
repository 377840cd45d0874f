"""The engine interface every TTS engine implements, and its declared capabilities."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from glmtts.errors import EngineNotLoadedError, InvalidRequestError
from glmtts.request import SynthesisRequest, SynthesisResult
from glmtts.say import N_, Say  # engines mark their sentences for the catalog (glmtts.say)

#: Request fields an engine may or may not honour (``text`` is always honoured).
KNOBS = ("voice", "reference_audio", "sample_rate", "use_kv_cache", "seed", "sampling_method",
         "speed")


@dataclass(frozen=True)
class Capabilities:
    """What an engine does with a request.

    Attributes:
        native_sample_rate: The rate the model produces, in Hz.
        sample_rates: Output rates it can deliver (native one included).
        honours: Request fields (from :data:`KNOBS`) that change its output.
        reasons: For each knob *not* honoured, one line saying why (shown next to the disabled
            widget).
        speech: False for engines whose audio is not speech (memory twins).
        lighter: For each request feature whose change makes a request need less memory
            without changing what is said: ``(heavy value, light value, words)``; the session
            retries an out-of-memory request that way, and the policy advises it in ``words``.
        invalidates: For each request feature whose change between two syntheses makes state
            the engine holds stale: ``(cleanup level, why)``, the level being ``none`` (the
            engine handles the switch itself), ``light``, ``full`` or ``restart``. The policy
            reads this instead of knowing engines; a feature not named needs nothing.
        concurrent: True when one loaded model may serve several ``synthesize`` calls at once
            from different threads (no state changes during a synthesis); the HTTP service
            then admits as many as fit its memory budget, else one at a time.
    """

    native_sample_rate: int
    sample_rates: tuple[int, ...]
    honours: frozenset[str]
    reasons: dict[str, str] = field(default_factory=dict)
    speech: bool = True
    invalidates: dict[str, tuple[str, str]] = field(default_factory=dict)
    lighter: dict[str, tuple[Any, Any, str]] = field(default_factory=dict)
    concurrent: bool = False

    def reason(self, knob: str) -> str | None:
        """Why ``knob`` is ignored, or None when it is honoured."""
        if knob in self.honours:
            return None
        return self.reasons.get(knob, N_("this engine ignores it"))

    def to_dict(self) -> dict[str, Any]:
        """As JSON values (an engine worker sends its engine's capabilities this way)."""
        extra = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in _BASE_FIELDS}  # a subclass's own fields, for reading
        return {**extra, "native_sample_rate": self.native_sample_rate,
                "sample_rates": list(self.sample_rates), "honours": sorted(self.honours),
                "reasons": dict(self.reasons), "speech": self.speech,
                "invalidates": {k: list(v) for k, v in self.invalidates.items()},
                "lighter": {k: list(v) for k, v in self.lighter.items()},
                "concurrent": self.concurrent}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capabilities:
        """The inverse of :meth:`to_dict` (a subclass's own fields are dropped)."""
        return cls(native_sample_rate=int(data["native_sample_rate"]),
                   sample_rates=tuple(int(r) for r in data["sample_rates"]),
                   honours=frozenset(data["honours"]), reasons=dict(data.get("reasons", {})),
                   speech=bool(data.get("speech", True)),
                   invalidates={k: (str(v[0]), str(v[1]))
                                for k, v in data.get("invalidates", {}).items()},
                   lighter={k: (v[0], v[1], str(v[2]))
                            for k, v in data.get("lighter", {}).items()},
                   concurrent=bool(data.get("concurrent", False)))


_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(Capabilities))


class Engine(ABC):
    """A TTS engine: ``load(device)`` once, ``synthesize(request)`` many times, ``unload()``.

    Engines are pure model code: they import neither the monitoring package nor Streamlit.
    """

    name: str = "engine"
    #: True for an engine that runs its model in another process (:mod:`glmtts.worker`).
    isolated: bool = False
    #: The ``dtype`` option as given (``auto``, ``fp32``, ``bf16``, ``fp16``); None for an
    #: engine without a choice of precision (see :mod:`glmtts.precision`).
    requested_dtype: str | None = None
    #: The precision of the loaded weights, or the one the next load uses.
    dtype_name: str | None = None

    def __init__(self) -> None:
        self._device: str | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this engine cannot run on this machine (one line), or None when it can.

        Checked before construction, so the UI can list the engine with the reason."""
        return None

    @classmethod
    def problem_for(cls, options: dict[str, Any]) -> str | None:
        """Like :meth:`unavailable_reason`, for an engine built with ``options`` (an engine
        worker asks this under its own interpreter)."""
        return cls.unavailable_reason()

    def resolve_device(self, device: str | None) -> str:
        """The concrete device ``device`` (``auto``...) means for this engine.

        Raises:
            DeviceUnavailableError: that device does not exist here.
        """
        from glmtts.device import resolve_device

        return resolve_device(device)

    def resident_modules(self) -> int | None:
        """How many modules of outside code the engine imported are still loaded (0 after a
        full cleanup of an engine that removes them); None for engines that import none."""
        return None

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this engine honours."""

    @property
    def device(self) -> str | None:
        """The device the model is loaded on, or None when not loaded."""
        return self._device

    @property
    def loaded(self) -> bool:
        return self._device is not None

    @abstractmethod
    def load(self, device: str = "auto") -> None:
        """Load the model onto ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

    @abstractmethod
    def unload(self) -> None:
        """Drop every reference to the model and engine-level caches (idempotent)."""

    def close(self) -> None:
        """Release everything for good (the model; an engine worker's process too)."""
        self.unload()

    @abstractmethod
    def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Engine-specific synthesis; the request is already validated for this engine."""

    def model_bytes(self) -> int | None:
        """Bytes of the loaded weights (parameters and buffers), or None when not loaded."""
        return None

    def memory_estimate(self, dtype: str, request: SynthesisRequest | None = None
                        ) -> tuple[int, int | None] | None:
        """Predicted ``(weights bytes, peak bytes above the weights)`` in ``dtype`` without
        loading anything (the peak None when the engine cannot say); None for an engine
        without a choice of precision. The ``auto`` precision compares them with free
        memory."""
        return None

    def choose_dtype(self, dtype: str) -> None:
        """Load the weights in ``dtype`` at the next load: how the caller resolves the
        ``auto`` option (an explicit option is kept).

        Raises:
            ValueError: the engine has no choice of precision.
        """
        raise ValueError(f"the {self.name} engine has no choice of precision")

    def needs_reload(self, request: SynthesisRequest) -> bool:
        """True when the loaded model must partly reload to serve ``request`` (e.g. another
        vocoder for another sample rate); the session measures :meth:`reload_for` as a load."""
        return False

    def reload_for(self, request: SynthesisRequest) -> object | None:
        """Bring the model to ``request``'s configuration; returns what the switch did."""
        return None

    def check(self, request: SynthesisRequest) -> None:
        """Raise :class:`InvalidRequestError` when this engine cannot serve ``request``."""
        caps = self.capabilities
        if request.sample_rate is not None and request.sample_rate not in caps.sample_rates:
            rates = ", ".join(str(r) for r in caps.sample_rates)
            raise InvalidRequestError("sample_rate", Say(
                "{engine} cannot produce {rate} Hz; choose one of {rates}", engine=self.name,
                rate=request.sample_rate, rates=rates))

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Speak ``request.text``.

        Raises:
            EngineNotLoadedError: ``load`` was not called.
            InvalidRequestError: the request asks for something this engine cannot do.
        """
        if not self.loaded:
            raise EngineNotLoadedError(f"the {self.name} engine is not loaded: call load() first")
        self.check(request)
        return self._synthesize(request)
