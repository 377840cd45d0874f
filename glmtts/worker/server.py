"""The engine worker: runs one engine in this process and answers the app over the protocol.

Started by the app (:mod:`glmtts.worker.client`) as ``PYTHON .../glmtts/worker/__main__.py
--fd N`` under any interpreter with Python 3.10+ (upstream GLM-TTS's own environment, say): it
imports nothing of Streamlit, pandas, plotly, FastAPI or psutil, and nothing at all beyond the
standard library until asked (``hello`` reports what is missing instead of failing to start).

Threads: a reader thread reads every request; ``memory``, ``reset_peaks`` and ``ping`` are
answered there at once (the live timeline asks while a synthesis runs), every other op goes to
the main thread in order. When the app goes away (end of file on the socket) the worker exits at
once, whatever it was doing.
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import socket
import sys
import threading
import time
import traceback
from typing import Any

from glmtts.worker.protocol import (
    QUICK_OPS,
    Closed,
    ProtocolError,
    encode_frame,
    error_body,
    greeting,
    read_frame,
)

log = logging.getLogger("glmtts.worker")

MIN_PYTHON = (3, 10)
MIN_TORCH = (2, 1)
_POISON = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "CUDNN_STATUS",
           "an illegal memory access")


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


class Worker:
    """One engine, driven by requests from one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._jobs: queue.Queue[tuple[dict[str, Any], bytes] | None] = queue.Queue()
        self.engine: Any = None
        self.engine_key: tuple[str, str] | None = None
        self._allocator: Any = None

    # ------------------------------------------------------------------ transport
    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        frame = encode_frame(header, payload)
        with self._send_lock:
            self.sock.sendall(frame)

    def answer(self, rid: Any, result: dict[str, Any], payload: bytes = b"") -> None:
        self.send({"id": rid, "ok": True, "result": result}, payload)

    def fail(self, rid: Any, error: dict[str, Any]) -> None:
        self.send({"id": rid, "ok": False, "error": error})

    def read_loop(self) -> None:
        """Reader thread: quick ops at once, the rest to the main thread."""
        while True:
            try:
                header, payload = read_frame(self.sock)
            except Closed:
                os._exit(0)  # the app is gone: nothing to answer, nothing to keep
            except (ProtocolError, OSError) as exc:
                sys.stderr.write(f"glmtts worker: unreadable request ({exc}); exiting\n")
                os._exit(3)
            op = header.get("op")
            if op in QUICK_OPS:
                self.run_op(header, payload)
            else:
                self._jobs.put((header, payload))

    def serve(self) -> None:
        threading.Thread(target=self.read_loop, name="worker-reader", daemon=True).start()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self.run_op(*job)

    def run_op(self, header: dict[str, Any], payload: bytes) -> None:
        rid, op = header.get("id"), header.get("op")
        args = header.get("args") or {}
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None or not isinstance(args, dict):
            self.fail(rid, error_body("protocol", f"unknown op {op!r} or malformed arguments"))
            return
        try:
            out = handler(**args)
        except BaseException as exc:  # every failure becomes an answer; the worker goes on
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.fail(rid, classify(exc))
            del exc
            return
        result, data = out if isinstance(out, tuple) else (out, b"")
        self.answer(rid, result, data)
        if op == "shutdown":
            self.sock.close()
            os._exit(0)

    # ------------------------------------------------------------------ helpers
    def allocator(self) -> Any:
        if self._allocator is None:
            from monitoring.torch_allocator import TorchAllocatorProbe

            self._allocator = TorchAllocatorProbe()
        return self._allocator


    def ensure_engine(self, engine: str, options: dict[str, Any]) -> Any:
        import json

        key = (engine, json.dumps(options, sort_keys=True, default=str))
        if self.engine is None or self.engine_key != key:
            from glmtts.engines import create_engine

            if self.engine is not None:
                self.engine.unload()
            self.engine, self.engine_key = None, None
            self.engine = create_engine(engine, **options)
            self.engine_key = key
        return self.engine

    @staticmethod
    def request(data: dict[str, Any]) -> Any:
        from glmtts.request import SynthesisRequest

        return SynthesisRequest.from_dict(data)

    # ------------------------------------------------------------------ ops
    def op_ping(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    def op_hello(self, engine: str | None = None, options: dict[str, Any] | None = None,
                 threads: int | None = None) -> dict[str, Any]:
        return environment_report(engine, options or {}, threads)

    def op_capabilities(self, engine: str, options: dict[str, Any]) -> dict[str, Any]:
        return self.ensure_engine(engine, options).capabilities.to_dict()

    def op_load(self, engine: str, options: dict[str, Any], device: str = "auto",
                dtype: str | None = None) -> dict[str, Any]:
        target = self.ensure_engine(engine, options)
        if dtype is not None:  # the app's choice for the ``auto`` precision
            target.choose_dtype(dtype)
        t0 = time.perf_counter()
        target.load(device)
        return {"device": target.device, "weights_bytes": target.model_bytes(),
                "seconds": time.perf_counter() - t0, "dtype": target.dtype_name,
                "capabilities": target.capabilities.to_dict()}

    def op_check(self, engine: str, options: dict[str, Any],
                 request: dict[str, Any]) -> dict[str, Any]:
        self.ensure_engine(engine, options).check(self.request(request))
        return {}

    def op_needs_reload(self, engine: str, options: dict[str, Any],
                        request: dict[str, Any]) -> dict[str, Any]:
        target = self.ensure_engine(engine, options)
        return {"needs_reload": bool(target.needs_reload(self.request(request)))}

    def op_reload_for(self, engine: str, options: dict[str, Any],
                      request: dict[str, Any]) -> dict[str, Any]:
        import dataclasses

        target = self.ensure_engine(engine, options)
        switch = target.reload_for(self.request(request))
        details = dataclasses.asdict(switch) if dataclasses.is_dataclass(switch) else None
        return {"switch": details, "weights_bytes": target.model_bytes(),
                "capabilities": target.capabilities.to_dict()}

    def op_synthesize(self, engine: str, options: dict[str, Any],
                      request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        import numpy as np

        target = self.ensure_engine(engine, options)
        req = self.request(request)
        probe = self.allocator()
        before = probe.try_read()
        probe.reset_peaks()
        result = target.synthesize(req)
        from monitoring.release import trim_if_grown

        trimmed = trim_if_grown()  # bounds what glibc keeps of the freed activations
        after = probe.try_read()
        audio = np.ascontiguousarray(result.audio, dtype="<f4")
        memory = {"before": before, "after": after, "heap_trimmed_bytes": trimmed,
                  "releasable_bytes": probe.releasable_bytes() if after else None,
                  "unavailable": probe.unavailable_reason}
        return ({"sample_rate": result.sample_rate, "timings": result.timings,
                 "wall_s": result.wall_s, "metadata": _jsonable(result.metadata),
                 "memory": memory, "samples": int(audio.size)}, audio.tobytes())

    def op_memory(self, releasable: bool = False) -> dict[str, Any]:
        probe = self.allocator()
        figures = probe.try_read()
        if figures is None:
            return {"unavailable": probe.unavailable_reason or "the allocator read failed"}
        if releasable:
            figures["torch_releasable_bytes"] = probe.releasable_bytes()
        figures["device_uuid"] = probe.device_uuid()
        return figures

    def op_reset_peaks(self) -> dict[str, Any]:
        return {"reset": self.allocator().reset_peaks()}

    def op_cleanup(self, level: str) -> dict[str, Any]:
        from monitoring.release import light_steps

        if level not in ("light", "full"):
            raise ValueError(f"a worker cleans up 'light' or 'full', not {level!r}")
        if level == "full" and self.engine is not None:
            self.engine.unload()
        done = light_steps()
        left = self.engine.resident_modules() if self.engine is not None else None
        done.update(worker_pid=os.getpid(), upstream_modules_left=left)
        return done

    def op_shutdown(self) -> dict[str, Any]:
        if self.engine is not None:
            self.engine.unload()
        return {}


def _jsonable(value: Any) -> Any:
    """Metadata as JSON values (paths and numpy scalars become strings and numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)


def classify(exc: BaseException) -> dict[str, Any]:
    """The protocol's error object for ``exc``."""
    from glmtts.errors import GlmTtsError, InvalidRequestError, is_out_of_memory

    message = str(exc) or type(exc).__name__
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if is_out_of_memory(exc):
        return error_body("oom", message, error_class=name)
    if isinstance(exc, InvalidRequestError):
        return error_body("invalid", message, error_class=name, field=exc.field)
    if isinstance(exc, GlmTtsError):
        return error_body("engine", message, error_class=name)
    poisoned = any(marker in message for marker in _POISON)
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return error_body("internal", f"{type(exc).__name__}: {message}", error_class=name,
                      poisoned=poisoned, details=tail[-4000:])


def environment_report(engine: str | None, options: dict[str, Any],
                       threads: int | None = None) -> dict[str, Any]:
    """What this interpreter has, and what it lacks to run ``engine`` (one line each)."""
    missing: list[str] = []
    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                            "pid": os.getpid(), "torch": None, "numpy": None,
                            "cuda_available": False, "cuda_version": None, "cuda_devices": 0}
    if sys.version_info < MIN_PYTHON:
        missing.append(f"Python {platform.python_version()} is too old: the worker needs "
                       f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    try:
        import numpy
    except ImportError:
        missing.append(f"numpy is not installed in {sys.executable}")
    else:
        info["numpy"] = numpy.__version__
    try:
        import torch
    except ImportError:
        missing.append(f"torch is not installed in {sys.executable} (the worker needs torch "
                       f">= {MIN_TORCH[0]}.{MIN_TORCH[1]})")
        torch = None
    if torch is not None:
        info["torch"] = torch.__version__
        if _version_tuple(torch.__version__) < MIN_TORCH:
            missing.append(f"torch {torch.__version__} is too old: the worker needs "
                           f">= {MIN_TORCH[0]}.{MIN_TORCH[1]}")
        if threads:
            torch.set_num_threads(int(threads))
        info["torch_threads"] = torch.get_num_threads()
        info["cuda_version"] = torch.version.cuda
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["cuda_devices"] = torch.cuda.device_count() if info["cuda_available"] else 0
        if info["cuda_available"]:  # for the app's ``auto`` precision: bf16, else fp16
            from glmtts.precision import device_facts

            info["cuda_bf16"] = device_facts("cuda").bf16_native
    if engine and not missing:
        from glmtts.engines import engine_class

        reason = engine_class(engine).problem_for(options)
        if reason:
            missing.append(reason)
    info["missing"] = missing
    return info


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "--fd" or not args[1].isdigit():
        sys.stderr.write("usage: worker --fd N (started by the app, not by hand)\n")
        return 2
    sock = socket.socket(fileno=int(args[1]))
    sys.stdout = sys.stderr  # upstream prints; standard output is not the protocol's
    logging.basicConfig(level=os.environ.get("GLMTTS_WORKER_LOG", "WARNING"),
                        format="worker %(levelname)s %(name)s: %(message)s")
    worker = Worker(sock)
    worker.send(greeting(pid=os.getpid(), python=platform.python_version(),
                         executable=sys.executable))
    worker.serve()
    return 0
