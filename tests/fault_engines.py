"""Test-only engines with an out-of-memory switch (a CPU machine cannot run out of GPU memory
on demand, so the recovery paths are driven by these). Nothing of the product imports this
module; tests name it by import path, e.g. ``SynthesisSession("tests.fault_engines:FaultyPiper")``
or ``python -m glmtts serve --engine tests.fault_engines:FaultyPiper``.

:class:`FaultyPiper` is the real embedded voice, except that a request whose text contains a
registered match fails once with ``MemoryError`` (``torch.cuda.OutOfMemoryError`` on CUDA), as
if the allocation had failed. Matches come from :meth:`FaultyPiper.inject_oom` and from the
environment variable ``GLMTTS_TEST_OOM`` (for subprocesses: the service, batch runs).
"""

from __future__ import annotations

import os

from glmtts.engines.piper import PiperEngine
from glmtts.request import SynthesisRequest, SynthesisResult

OOM_ENV = "GLMTTS_TEST_OOM"


class FaultyPiper(PiperEngine):
    """The embedded voice with an out-of-memory switch (tests only)."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self._oom_faults: list[str] = [os.environ[OOM_ENV]] if os.environ.get(OOM_ENV) else []

    def inject_oom(self, match: str = "") -> None:
        """The next request whose text contains ``match`` ("" = any) fails once."""
        self._oom_faults.append(match)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        for match in self._oom_faults:
            if match in request.text and self.loaded:
                self._oom_faults.remove(match)
                message = f"injected out-of-memory fault (test engine, match {match!r})"
                if self.device and self.device.startswith("cuda"):
                    import torch

                    raise torch.cuda.OutOfMemoryError(message)
                raise MemoryError(message)
        return super().synthesize(request)
