"""The ``auto`` precision, decided where memory is measured: just before a load.

For an engine whose ``dtype`` option is ``auto`` (:mod:`glmtts.precision`), the caller predicts
fp32 weights + peak, adds the policy's safety margin, and compares that with the free memory of
the device (NVML's free bytes of the GPU). The weights come from the engine's own estimate
(glm-tts: its checkpoint files; twin: its parameter count); the peak from the policy's
prediction over this session's fp32 syntheses where there are some, else from the engine's
estimate (the twin's analytic model; glm-tts has none: the margin alone). On a CPU nothing is
read: ``auto`` is fp32 there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from glmtts.engines.base import Engine
from glmtts.precision import AutoChoice, choose_auto, device_facts, half_dtype
from glmtts.request import SynthesisRequest


def _half(engine: Engine, device: str) -> str:
    """bf16, or fp16 where the GPU has no bf16 (a worker's own torch answers for its GPU)."""
    report = getattr(engine, "report", None)
    if isinstance(report, dict) and report.get("cuda_bf16") is not None:
        return "bf16" if report["cuda_bf16"] else "fp16"
    try:
        return half_dtype(device_facts(device))
    except (RuntimeError, AssertionError):  # this process's torch has no CUDA
        return "bf16"


def decide(engine: Engine, device: str, *, free_bytes: int | None, margin: float,
           history_peak: int | None = None, request: SynthesisRequest | None = None
           ) -> AutoChoice | None:
    """Resolve ``engine``'s ``auto`` precision for a load on ``device`` and tell the engine
    (:meth:`~glmtts.engines.base.Engine.choose_dtype`); None when its option is not ``auto``
    or it is loaded already.

    Args:
        free_bytes: Free memory of ``device`` now (None: unknown, fp32 stays).
        margin: The policy's safety margin.
        history_peak: The policy's predicted peak of fp32 syntheses (None: no history).
    """
    if engine.requested_dtype != "auto" or engine.loaded:
        return None
    if not device.startswith("cuda"):
        choice = AutoChoice("fp32")
    else:
        half = _half(engine, device)
        full = engine.memory_estimate("fp32", request)
        small = engine.memory_estimate(half, request)
        peak, basis = history_peak, "history"
        if peak is None:
            peak, basis = (full[1] if full else None), "estimate"
        if peak is None:
            basis = "none"
        choice = choose_auto(device, fp32_weights=full[0] if full else None,
                             half_weights=small[0] if small else None, peak=peak,
                             free=free_bytes, margin=margin, half=half, basis=basis)
    engine.choose_dtype(choice.dtype)
    return choice


def session_decide(session: Any, device: str, request: SynthesisRequest | None
                   ) -> AutoChoice | None:
    """:func:`decide` for a :class:`~glmtts.session.SynthesisSession`: free memory from its
    probes, the margin and the fp32 peak from its policy and history."""
    engine = session.engine
    if engine.requested_dtype != "auto" or engine.loaded:
        return None
    free = peak = None
    settings = session.policy_settings()
    if device.startswith("cuda"):
        from monitoring.policy import predict_peak

        snapshot = session.snapshot()
        free = snapshot.nvml_device_free_bytes
        if request is not None:
            pending = session.pending(request)
            features = tuple((k, "fp32" if k == "dtype" else v) for k, v in pending.features)
            prediction = predict_peak(snapshot, list(session.history),
                                      dataclasses.replace(pending, features=features), settings)
            peak = prediction.peak_upper_bytes if prediction is not None else None
    return decide(engine, device, free_bytes=free, margin=settings.safety_margin,
                  history_peak=peak, request=request)


def cli_decide(engine: Engine, device: str, request: SynthesisRequest | None
               ) -> AutoChoice | None:
    """:func:`decide` for a one-off load without a session (``synth``): free memory from
    NVML now, the policy's default margin, no history."""
    if engine.requested_dtype != "auto" or engine.loaded:
        return None
    free = None
    if device.startswith("cuda"):
        from monitoring import take_snapshot

        free = take_snapshot().nvml_device_free_bytes
    from monitoring.policy import PolicySettings

    return decide(engine, device, free_bytes=free, margin=PolicySettings().safety_margin,
                  request=request)


def load_features(engine: Engine, choice: AutoChoice | None) -> dict[str, Any]:
    """What a load event records about precision (nothing for an engine without one)."""
    if engine.requested_dtype is None and engine.dtype_name is None:
        return {}
    return {"dtype": engine.dtype_name, "dtype_requested": engine.requested_dtype,
            **(choice.features() if choice is not None else {})}
