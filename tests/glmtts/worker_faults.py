"""A test engine for the worker's fault tests (imported by the worker as
``tests.glmtts.worker_faults:FaultEngine``): what a real engine can do only by accident (hang,
be killed mid-synthesis, lose its CUDA context) it does on request, by its text.

- ``sleep N``: takes N seconds (long enough to ``kill -9`` the worker meanwhile);
- ``hang``: never returns (the per-call timeout must end the worker);
- ``cuda-error``: raises the RuntimeError a poisoned CUDA context raises (no GPU can exist on
  the test machine; the worker must be ended and the next call start a fresh one);
- ``oom``: raises MemoryError; ``oom once``: raises it the first time only (in this worker);
- anything else: 0.1 s of a 440 Hz tone.

Loading holds 64 MiB of host memory, so that a restart's freed RSS can be measured.
"""

from __future__ import annotations

import time

import numpy as np

from glmtts.engines.base import Capabilities, Engine
from glmtts.request import SynthesisRequest, SynthesisResult

_FAILED: set[str] = set()  # commands that already failed once in this process


class FaultEngine(Engine):
    name = "faults"

    def __init__(self) -> None:
        super().__init__()
        self._ballast: np.ndarray | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(native_sample_rate=16000, sample_rates=(16000,),
                            honours=frozenset({"seed"}))

    def load(self, device: str = "auto") -> None:
        self._ballast = np.ones(64 << 20, dtype=np.uint8)
        self._device = "cpu"

    def unload(self) -> None:
        self._ballast = None
        self._device = None

    def model_bytes(self) -> int | None:
        return None if self._ballast is None else self._ballast.nbytes

    def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        text = request.text
        if text.startswith("sleep "):
            time.sleep(float(text.split()[1]))
        elif text == "hang":
            while True:
                time.sleep(1)
        elif text == "cuda-error":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        elif text == "oom":
            raise MemoryError("test engine: out of memory on request")
        elif text == "oom once" and "oom once" not in _FAILED:
            _FAILED.add("oom once")
            raise MemoryError("test engine: out of memory, once")
        t = np.arange(1600) / 16000
        audio = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        return SynthesisResult(audio=audio, sample_rate=16000, timings={}, wall_s=0.0,
                               metadata={"seed": request.seed})
