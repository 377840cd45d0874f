"""An engine run in a worker process, to the session an ``Engine`` like the others.

``WorkerEngine("glm-tts", {"home": ...}, python=...)`` starts a worker with that interpreter on
first use, asks it what it lacks (``hello``), and forwards load, check, reload, synthesis and
cleanup. Errors come back typed (a bad field is an ``InvalidRequestError`` naming it, an
out-of-memory error is a ``MemoryError`` the session recovers from); a worker that died, hung or
spoke garbage is a :class:`~glmtts.errors.WorkerError`, after which the next call starts a fresh
worker. :meth:`WorkerEngine.restart` ends the process: only that frees the CUDA context and
everything else the process held.

The memory of the worker is the worker's: :meth:`WorkerEngine.allocator` reads its torch
allocator over the protocol (even during a synthesis), and :attr:`WorkerEngine.pid` lets the
monitoring side read its host RSS and NVML's per-process figure.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from typing import Any

import numpy as np

from glmtts.engines.base import Capabilities, Engine
from glmtts.errors import (
    GlmTtsError,
    InvalidRequestError,
    WorkerError,
    WorkerStartError,
)
from glmtts.request import SynthesisRequest, SynthesisResult
from glmtts.worker.client import (
    QUICK_TIMEOUT_S,
    WorkerProcess,
    default_python,
    interpreter_problem,
)

log = logging.getLogger(__name__)

#: Seconds a memory reading may take before the reader gives up (the sampler asks at 10 Hz).
MEMORY_TIMEOUT_S = 1.0


class WorkerOutOfMemoryError(MemoryError):
    """The worker ran out of memory (the message names the original error type)."""


def _rebuild(error: dict[str, Any]) -> BaseException:
    """The typed exception for a worker's ``error`` object."""
    kind, message = error.get("kind"), str(error.get("message") or "the worker failed")
    name, field = error.get("class") or "", error.get("field")
    if kind == "oom":
        return WorkerOutOfMemoryError(f"{name.rsplit('.', 1)[-1] or 'out of memory'} in the "
                                      f"engine worker: {message}")
    cls: Any = None
    module, _, qualname = name.rpartition(".")
    if module.startswith("glmtts.") and kind in ("invalid", "engine"):
        try:
            cls = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            cls = None
    if isinstance(cls, type) and issubclass(cls, GlmTtsError):
        for args in ((message,), (field or "request", message)):
            try:
                exc = cls(*args)
            except TypeError:
                continue
            if kind != "invalid" or getattr(exc, "field", None) == (field or "request"):
                return exc
    if kind == "invalid":
        return InvalidRequestError(field or "request", message)
    if kind == "engine":
        return GlmTtsError(message)
    return WorkerError(f"the engine worker failed: {message}")


class RemoteAllocator:
    """The torch allocator of a worker process, with the interface of
    :class:`monitoring.torch_allocator.TorchAllocatorProbe` (for :class:`monitoring.Probes`).

    A worker that is not running holds nothing: its figures read 0 (when the last worker had
    CUDA; without CUDA there are no allocator figures at all)."""

    def __init__(self, engine: WorkerEngine) -> None:
        self._engine = engine
        self._uuid: str | None = None

    @property
    def unavailable_reason(self) -> str | None:
        report = self._engine.report
        if report is None:
            return "the engine worker has not started yet"
        if not report.get("cuda_available"):
            return "torch reports CUDA is not available in the engine worker"
        return None

    def _ask(self, **args: Any) -> dict[str, Any] | None:
        proc = self._engine.process
        if proc is None or not proc.alive or self.unavailable_reason is not None:
            return None
        try:
            result, _ = proc.call("memory", args, timeout_s=MEMORY_TIMEOUT_S)
        except WorkerError:
            return None
        if "error" in result or "unavailable" in result:
            return None
        self._uuid = result.pop("device_uuid", None) or self._uuid
        return result

    def _idle(self) -> bool:
        return self._engine.pid is None and self.unavailable_reason is None

    def try_read(self) -> dict[str, int] | None:
        if self._idle():
            from monitoring.torch_allocator import STAT_KEYS

            return dict.fromkeys(STAT_KEYS, 0)
        figures = self._ask()
        if figures is not None:
            figures.pop("torch_releasable_bytes", None)
        return figures

    def reset_peaks(self) -> bool:
        proc = self._engine.process
        if self._idle():
            return True
        if proc is None or not proc.alive or self.unavailable_reason is not None:
            return False
        try:
            result, _ = proc.call("reset_peaks", timeout_s=QUICK_TIMEOUT_S)
        except WorkerError:
            return False
        return bool(result.get("reset"))

    def releasable_bytes(self) -> int | None:
        if self._idle():
            return 0
        figures = self._ask(releasable=True)
        return None if figures is None else figures.get("torch_releasable_bytes")

    def device_uuid(self) -> str | None:
        return self._uuid


class WorkerEngine(Engine):
    """``engine`` (a registered name) run in a worker process.

    Args:
        engine: The engine's name (or ``module:Class``).
        options: Its constructor's options (JSON values: they travel to the worker).
        python: The worker's interpreter; None: :func:`~glmtts.worker.client.default_python`.
        env: The worker's environment (default: this process's).
        timeout_s: Longest wait for a load or a synthesis before the worker is deemed hung
            and ended (default ``$GLMTTS_WORKER_TIMEOUT``, else 1,800 s).

    Raises:
        WorkerStartError: the interpreter does not exist or is not executable.
    """

    isolated = True

    def __init__(self, engine: str, options: dict[str, Any] | None = None, *,
                 python: str | None = None, env: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> None:
        super().__init__()
        self.name = engine
        self.options = dict(options or {})
        self.python = python or default_python(self.options.get("home"))
        problem = interpreter_problem(self.python)
        if problem is not None:
            raise WorkerStartError(problem)
        self.env = env
        self.timeout_s = timeout_s
        self.process: WorkerProcess | None = None
        self.report: dict[str, Any] | None = None
        self._caps: Capabilities | None = None
        self._weights: int | None = None
        self._modules_left: int | None = None
        #: Seconds the latest worker took to start and answer ``hello`` (part of a reload).
        self.last_start_s: float | None = None
        self.starts = 0
        self._unbilled_start_s: float | None = None
        dtype = self.options.get("dtype")
        self.requested_dtype = dtype if isinstance(dtype, str) else None
        self.dtype_name = None if dtype in (None, "auto") else dtype
        self._chosen_dtype: str | None = None
        self._estimator: Engine | None = None

    def __repr__(self) -> str:
        return f"WorkerEngine({self.name!r}, pid={self.pid}, python={self.python!r})"

    # ------------------------------------------------------------------ the process
    @property
    def pid(self) -> int | None:
        """PID of the running worker, or None."""
        proc = self.process
        return proc.pid if proc is not None and proc.alive else None

    def _threads(self) -> int | None:
        torch = sys.modules.get("torch")
        return torch.get_num_threads() if torch is not None else None

    def _ensure_process(self) -> WorkerProcess:
        proc = self.process
        if proc is not None and proc.alive:
            return proc
        if proc is not None:  # it died: forget what it held
            self._forget()
        t0 = time.perf_counter()
        proc = WorkerProcess(self.python, env=self.env)
        try:
            report, _ = proc.call("hello", {"engine": self.name, "options": self.options,
                                            "threads": self._threads()},
                                  timeout_s=max(120.0, QUICK_TIMEOUT_S))
        except WorkerError:
            proc.kill()
            raise
        if "error" in report:
            proc.kill()
            raise _rebuild(report["error"])
        if report.get("missing"):
            proc.shutdown()
            raise WorkerStartError(f"the worker's interpreter {self.python} cannot run "
                                   f"{self.name}: {'; '.join(report['missing'])}")
        self.process, self.report = proc, report
        self.last_start_s = self._unbilled_start_s = time.perf_counter() - t0
        self.starts += 1
        log.info("engine worker %d started for %s with %s (Python %s, torch %s) in %.2f s",
                 proc.pid, self.name, self.python, report.get("python"), report.get("torch"),
                 self.last_start_s)
        return proc

    def pop_start_s(self) -> float | None:
        """Seconds the current worker took to start, once (the next load event reports it:
        after a restart, coming back costs the start plus the load)."""
        seconds, self._unbilled_start_s = self._unbilled_start_s, None
        return seconds

    def _forget(self) -> None:
        self.process = None
        self._device = None
        self._weights = None

    def _call(self, op: str, args: dict[str, Any] | None = None, *,
              timeout_s: float | None = None) -> tuple[dict[str, Any], bytes]:
        proc = self._ensure_process()
        try:
            result, payload = proc.call(op, args, timeout_s=timeout_s or self.timeout_s)
        except WorkerError:
            self._forget()
            raise
        error = result.get("error") if "error" in result else None
        if error is not None:
            if error.get("poisoned"):
                log.warning("engine worker %d: its CUDA context is unusable after %s; ending it",
                            proc.pid, error.get("message"))
                proc.kill()
                self._forget()
            raise _rebuild(error)
        return result, payload

    def environment(self) -> dict[str, Any]:
        """What the worker's interpreter has (``hello``; starts the worker if needed).

        Raises:
            WorkerError: it cannot start, or lacks something (the message says what).
        """
        self._ensure_process()
        assert self.report is not None
        return dict(self.report)

    def _with(self, request: SynthesisRequest) -> dict[str, Any]:
        return {"engine": self.name, "options": self.options, "request": request.to_dict()}

    def allocator(self) -> RemoteAllocator:
        """The worker's torch allocator, for monitoring probes."""
        return RemoteAllocator(self)

    # ------------------------------------------------------------------ Engine
    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    @property
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            result, _ = self._call("capabilities", {"engine": self.name,
                                                    "options": self.options},
                                   timeout_s=600.0)
            self._caps = Capabilities.from_dict(result)
        return self._caps

    def resolve_device(self, device: str | None) -> str:
        name = (device or "auto").strip().lower()
        if name != "auto":
            return name  # the worker checks it when it loads
        report = self.report or self.environment()  # the last worker's answer will do
        return "cuda" if report.get("cuda_available") else "cpu"

    def choose_dtype(self, dtype: str) -> None:
        """Sent with the next load (the worker's engine resolves its ``auto`` option)."""
        if self.requested_dtype == "auto" and not self.loaded:
            self._chosen_dtype = self.dtype_name = dtype

    def memory_estimate(self, dtype: str, request: SynthesisRequest | None = None
                        ) -> tuple[int, int | None] | None:
        """The engine's own estimate, from an unloaded copy in this process (it reads only
        files and shapes); None when this interpreter cannot build one."""
        if self._estimator is None:
            from glmtts.engines import create_engine

            try:
                self._estimator = create_engine(self.name, **self.options)
            except (GlmTtsError, ImportError, TypeError, ValueError) as exc:  # not here
                log.info("no memory estimate of %s in this process: %s", self.name, exc)
                return None
        return self._estimator.memory_estimate(dtype, request)

    def load(self, device: str = "auto") -> None:
        if self.loaded and self.pid is not None:
            return
        args = {"engine": self.name, "options": self.options, "device": device}
        if self._chosen_dtype is not None:
            args["dtype"] = self._chosen_dtype
        result, _ = self._call("load", args)
        self._device = result.get("device")
        self._weights = result.get("weights_bytes")
        self.dtype_name = result.get("dtype", self.dtype_name)
        self._caps = Capabilities.from_dict(result["capabilities"])

    def unload(self) -> None:
        """Drop the model in the worker (the process stays: see :meth:`restart`)."""
        self.cleanup("full")

    def cleanup(self, level: str) -> dict[str, Any]:
        """Run a ``light`` or ``full`` cleanup in the worker; what its steps did, with
        ``worker_pid`` and ``upstream_modules_left``. Nothing to do without a worker."""
        pid = self.pid
        if pid is None:
            self._forget()
            return {"worker_pid": None, "upstream_modules_left": 0}
        try:
            result, _ = self._call("cleanup", {"level": level}, timeout_s=600.0)
        except WorkerError as exc:  # it is gone, and with it everything it held
            self._forget()
            self._modules_left = 0
            return {"worker_pid": pid, "upstream_modules_left": 0,
                    "note": f"the worker had ended: {exc}"}
        if level == "full":
            self._device = None
            self._weights = None
        self._modules_left = result.get("upstream_modules_left")
        return result

    def restart(self) -> dict[str, Any]:
        """End the worker process (it frees everything it held, the CUDA context included);
        the next use starts a fresh one. Returns its PID and exit code."""
        proc, pid = self.process, self.pid
        code = proc.shutdown() if proc is not None else None
        self._forget()
        self._modules_left = 0
        return {"worker_pid": pid, "exit_code": code, "upstream_modules_left": 0}

    def close(self) -> None:
        """End the worker (idempotent)."""
        if self.process is not None:
            self.restart()

    def model_bytes(self) -> int | None:
        return self._weights if self.loaded else None

    def resident_modules(self) -> int | None:
        return self._modules_left

    def check(self, request: SynthesisRequest) -> None:
        self._call("check", self._with(request), timeout_s=600.0)

    def needs_reload(self, request: SynthesisRequest) -> bool:
        if not self.loaded or self.pid is None:
            return False
        result, _ = self._call("needs_reload", self._with(request),
                               timeout_s=600.0)
        return bool(result.get("needs_reload"))

    def reload_for(self, request: SynthesisRequest) -> dict[str, Any] | None:
        result, _ = self._call("reload_for", self._with(request))
        if self.loaded:
            self._weights = result.get("weights_bytes")
        self._caps = Capabilities.from_dict(result["capabilities"])
        return result.get("switch")

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Speak ``request`` in the worker (which checks it there: one round trip)."""
        if not self.loaded:
            from glmtts.errors import EngineNotLoadedError

            raise EngineNotLoadedError(f"the {self.name} engine is not loaded: call load() "
                                       f"first")
        return self._synthesize(request)

    def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        t0 = time.perf_counter()
        result, payload = self._call("synthesize", self._with(request))
        audio = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        if audio.size != result.get("samples"):
            raise WorkerError(f"the worker sent {audio.size} samples, announced "
                              f"{result.get('samples')}")
        meta = dict(result.get("metadata") or {})
        meta["worker"] = {"pid": self.pid, "python": self.python,
                          "memory": result.get("memory"),
                          "transfer_s": round(time.perf_counter() - t0 - result["wall_s"], 4)}
        return SynthesisResult(audio=audio, sample_rate=int(result["sample_rate"]),
                               timings=dict(result.get("timings") or {}),
                               wall_s=time.perf_counter() - t0, metadata=meta)


def isolated_by_default(engine: str) -> bool:
    """Whether ``engine`` runs in a worker unless told otherwise: glm-tts does (upstream needs
    its own environment: ``GLMTTS_ISOLATE=0`` runs it in the app's process instead)."""
    if engine != "glm-tts":
        return False
    return os.environ.get("GLMTTS_ISOLATE", "1").strip().lower() not in ("0", "false", "no")
