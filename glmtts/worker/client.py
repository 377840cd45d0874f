"""The app side of an engine worker: start the process, call it, survive its faults.

:class:`WorkerProcess` starts ``PYTHON glmtts/worker/__main__.py --fd N`` with one end of a
socket pair, checks its greeting, and sends calls (:meth:`WorkerProcess.call`), each answered
or failed with a typed error from :mod:`glmtts.errors`:

- the interpreter is missing, not executable or too old: :class:`WorkerStartError`;
- the process dies while a call is outstanding (``kill -9``, a crash): :class:`WorkerDiedError`
  naming the signal or exit code and the last lines it wrote to standard error;
- no answer within the call's timeout: the process is ended, :class:`WorkerTimeoutError`;
- bytes that are not the protocol, or another version: the process is ended,
  :class:`WorkerProtocolError`.

After any of these the process is gone, and the next call of the engine starts a fresh one.
Standard output and error of the worker are read into a bounded buffer (and the debug log).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from glmtts.errors import (
    WorkerDiedError,
    WorkerError,
    WorkerProtocolError,
    WorkerStartError,
    WorkerTimeoutError,
)
from glmtts.say import Say
from glmtts.worker.protocol import (
    Closed,
    ProtocolError,
    check_greeting,
    encode_frame,
    read_frame,
)

log = logging.getLogger(__name__)

#: The worker's entry script (run by path, so the interpreter needs nothing of ours installed).
WORKER_MAIN = Path(__file__).resolve().with_name("__main__.py")
#: Seconds to wait for the greeting (the interpreter starts; nothing heavy is imported yet).
START_TIMEOUT_S = 60.0
#: Default per-call timeouts in seconds; ``GLMTTS_WORKER_TIMEOUT`` overrides the long ones
#: (a full-size GLM-TTS on a CPU takes minutes per synthesis).
QUICK_TIMEOUT_S = 5.0
DEFAULT_TIMEOUT_S = 1800.0


def long_timeout_s() -> float:
    """The wait for a load or synthesis: ``$GLMTTS_WORKER_TIMEOUT`` seconds, else 1,800."""
    try:
        return float(os.environ.get("GLMTTS_WORKER_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S
_LAST_WORDS = 40


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def interpreter_problem(python: str | os.PathLike[str]) -> str | None:
    """Why ``python`` cannot start a worker (one line), or None (checked without running it)."""
    path = Path(python).expanduser()
    if not path.exists():
        return Say("the worker's interpreter {path} does not exist (set GLMTTS_PYTHON)",
                   path=str(path))
    if path.is_dir():
        return Say("the worker's interpreter {path} is a folder, not a Python executable",
                   path=str(path))
    if not os.access(path, os.X_OK):
        return Say("the worker's interpreter {path} is not executable", path=str(path))
    return None


def default_python(home: str | os.PathLike[str] | None = None) -> str:
    """The interpreter for a worker: ``$GLMTTS_PYTHON``; else ``HOME/.venv/bin/python`` of the
    GLM-TTS checkout (``home`` or ``$GLMTTS_HOME``) if it exists; else this app's own."""
    env = os.environ.get("GLMTTS_PYTHON", "").strip()
    if env:
        return str(Path(env).expanduser())
    root = home or os.environ.get("GLMTTS_HOME", "").strip()
    if root:
        candidate = Path(root).expanduser() / ".venv" / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return sys.executable


class _Pending:
    __slots__ = ("done", "header", "payload")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.header: dict[str, Any] | None = None
        self.payload = b""


class WorkerProcess:
    """One running worker process and its connection.

    Args:
        python: The interpreter to run it with.
        env: Environment of the process (default: this process's, inherited as is, so that
            ``CUDA_VISIBLE_DEVICES``, ``PYTHONPATH`` and the like apply to it too).
        start_timeout_s: Seconds to wait for the greeting.

    Raises:
        WorkerStartError: the interpreter cannot be run, or exits before greeting.
        WorkerProtocolError: its first message is not this protocol's greeting.
    """

    def __init__(self, python: str, *, env: dict[str, str] | None = None,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        problem = interpreter_problem(python)
        if problem is not None:
            raise WorkerStartError(problem)
        self.python = str(Path(python).expanduser())
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed: WorkerError | None = None
        self.last_words: collections.deque[str] = collections.deque(maxlen=_LAST_WORDS)
        ours, theirs = socket.socketpair()
        t0 = time.perf_counter()
        try:
            self.process = subprocess.Popen(
                [self.python, str(WORKER_MAIN), "--fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                cwd=str(WORKER_MAIN.parents[2]), start_new_session=True)
        except OSError as exc:
            ours.close()
            raise WorkerStartError(Say("cannot run the worker's interpreter {python}: {error}",
                                       python=self.python,
                                       error=exc.strerror or str(exc))) from None
        finally:
            theirs.close()
        self.sock = ours
        self.pid = self.process.pid
        threading.Thread(target=self._drain_output, name=f"worker-{self.pid}-output",
                         daemon=True).start()
        self.greeting = self._greet(start_timeout_s)
        self.start_s = time.perf_counter() - t0
        threading.Thread(target=self._read_answers, name=f"worker-{self.pid}-reader",
                         daemon=True).start()

    # ------------------------------------------------------------------ start and end
    def _greet(self, timeout_s: float) -> dict[str, Any]:
        self.sock.settimeout(timeout_s)
        try:
            header, _ = read_frame(self.sock)
        except TimeoutError:
            self.kill()
            raise WorkerStartError(Say("the worker ({python}) did not start within {seconds} "
                                       "s{words}", python=self.python,
                                       seconds=f"{timeout_s:.0f}", words=self._words())) from None
        except Closed:
            code = self.process.wait(timeout=10)
            raise WorkerStartError(Say(
                "the worker's interpreter {python} exited with code {code} before it "
                "started{words}", python=self.python, code=code, words=self._words())) from None
        except ProtocolError as exc:
            self.kill()
            raise WorkerProtocolError(f"the worker ({self.python}) does not speak this app's "
                                      f"protocol: {exc}") from None
        finally:
            if self.sock.fileno() >= 0:
                self.sock.settimeout(None)
        try:
            return check_greeting(header)
        except ProtocolError as exc:
            self.kill()
            raise WorkerProtocolError(str(exc)) from None

    @property
    def alive(self) -> bool:
        return self._closed is None and self.process.poll() is None

    def kill(self) -> None:
        """End the process now (SIGKILL) and wait for it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not end 10 s after SIGKILL", self.pid)
        self._close(WorkerDiedError(f"the worker (pid {self.pid}) was ended"))

    def shutdown(self, timeout_s: float = 10.0) -> int | None:
        """Ask the worker to unload and exit; kill it if it does not within ``timeout_s``.
        Returns its exit code."""
        if self.alive:
            try:
                self.call("shutdown", timeout_s=timeout_s)
            except WorkerError as exc:
                log.info("worker %d did not shut down cleanly: %s", self.pid, exc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_s)
        self.kill()
        return self.process.returncode

    # ------------------------------------------------------------------ calls
    def call(self, op: str, args: dict[str, Any] | None = None, *,
             timeout_s: float | None = None) -> tuple[dict[str, Any], bytes]:
        """Send ``op`` and wait for its answer: ``(result, payload)``.

        Raises:
            WorkerDiedError, WorkerTimeoutError, WorkerProtocolError: see the module's doc.
            The typed error the worker reported (see :func:`glmtts.worker.engine.raise_for`)
                is raised by the caller from ``result``; here a failed answer comes back as
                ``({"error": ...}, b"")``.
        """
        if self._closed is not None:
            raise self._closed
        rid = next(self._ids)
        slot = _Pending()
        with self._lock:
            self._pending[rid] = slot
        try:
            frame = encode_frame({"id": rid, "op": op, "args": args or {}})
            try:
                with self._send_lock:
                    self.sock.sendall(frame)
            except OSError:
                self._died()
            limit = long_timeout_s() if timeout_s is None else timeout_s
            if not slot.done.wait(limit):
                self.kill()
                raise WorkerTimeoutError(
                    f"the worker (pid {self.pid}) did not answer {op!r} within {limit:.0f} s; "
                    f"it was ended (the next request starts a fresh one)")
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        if slot.header is None:
            assert self._closed is not None
            raise self._closed
        if slot.header.get("ok"):
            result = slot.header.get("result")
            return (result if isinstance(result, dict) else {}), slot.payload
        error = slot.header.get("error")
        return {"error": error if isinstance(error, dict) else {"kind": "internal",
                                                               "message": repr(error)}}, b""

    # ------------------------------------------------------------------ background
    def _read_answers(self) -> None:
        while True:
            try:
                header, payload = read_frame(self.sock)
            except (Closed, OSError):
                self._died()
                return
            except ProtocolError as exc:
                self._close(WorkerProtocolError(f"the worker (pid {self.pid}) sent something "
                                                f"that is not this app's protocol ({exc}); it "
                                                f"was ended"))
                self.kill()
                return
            with self._lock:
                slot = self._pending.get(header.get("id"))  # type: ignore[arg-type]
            if slot is None:
                log.warning("worker %d answered an unknown call %r", self.pid, header.get("id"))
                continue
            slot.header, slot.payload = header, payload
            slot.done.set()

    def _died(self) -> None:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = ("is no longer answering" if code is None else
               f"was killed by {_signal_name(code)}" if code < 0 else f"exited with code {code}")
        self._close(WorkerDiedError(f"the worker (pid {self.pid}) {how}{self._words()}"))

    def _close(self, error: WorkerError) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending = list(self._pending.values())
        for slot in pending:
            slot.done.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _drain_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.last_words.append(line)
                log.debug("worker %d: %s", self.pid, line)
        stream.close()

    def _words(self) -> str:
        time.sleep(0.05)  # let the output thread read what the process wrote last
        words = [w for w in list(self.last_words) if w.strip()][-3:]
        return Say("; its last words: {words}", words=" | ".join(words)) if words else ""
