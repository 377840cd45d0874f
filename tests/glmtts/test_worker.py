"""Engines in a worker process, tested with real processes: the real embedded voice and the twin
in a worker against the same in this process, real kill -9, real hangs and timeouts, real
interpreters that are missing, not executable, without torch, or that speak garbage.

Only the CUDA error is simulated (by the test engine in ``worker_faults.py``): no GPU can exist
on the test machine."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from glmtts.engines import create_engine
from glmtts.errors import (
    InvalidRequestError,
    WorkerDiedError,
    WorkerProtocolError,
    WorkerStartError,
    WorkerTimeoutError,
)
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from glmtts.worker.client import default_python
from glmtts.worker.engine import WorkerEngine
from glmtts.worker.server import classify
from monitoring import Sampler, open_store

FAULTS = "tests.glmtts.worker_faults:FaultEngine"
HERE = Path(__file__).resolve().parent
TEXT = "The worker speaks with the same voice. Twice, to be sure."


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- same audio
@pytest.mark.slow
def test_piper_in_a_worker_is_bit_identical_to_in_process() -> None:
    request = SynthesisRequest(text=TEXT, seed=11, sample_rate=24000)
    local = create_engine("piper")
    local.load("cpu")
    expected = local.synthesize(request)
    worker = WorkerEngine("piper")
    try:
        assert worker.environment()["missing"] == []
        worker.load("cpu")
        assert worker.model_bytes() == local.model_bytes()
        got = worker.synthesize(request)
        assert got.sample_rate == expected.sample_rate == 24000
        assert np.array_equal(got.audio, expected.audio)
        assert got.metadata["seed"] == 11 and got.metadata["worker"]["pid"] == worker.pid
        assert worker.capabilities == local.capabilities
    finally:
        worker.close()
        local.unload()


@pytest.mark.slow
def test_twin_in_a_worker_gives_the_same_audio() -> None:
    options = {"scale": 0.02}
    request = SynthesisRequest(text="A short twin sentence.", seed=5)
    local = create_engine("twin", **options)
    local.load("cpu")
    expected = local.synthesize(request)
    worker = WorkerEngine("twin", options)
    try:
        worker.load("cpu")
        got = worker.synthesize(request)
        assert not worker.capabilities.speech
        assert np.array_equal(got.audio, expected.audio)
    finally:
        worker.close()
        local.unload()


def test_bad_requests_come_back_typed() -> None:
    worker = WorkerEngine("piper")
    try:
        with pytest.raises(InvalidRequestError, match="cannot produce 44100 Hz") as info:
            worker.check(SynthesisRequest(text="hello", sample_rate=44100))
        assert info.value.field == "sample_rate"
    finally:
        worker.close()


# --------------------------------------------------------------------------- measurement
@pytest.mark.slow
def test_records_and_timeline_measure_the_worker(tmp_path: Path) -> None:
    store = open_store(tmp_path / "events.sqlite3")
    app_sampler = Sampler(interval_s=0.05).start()
    session = SynthesisSession("piper", isolate=True, store=store, sampler=app_sampler,
                               device="cpu", policy_mode="off")
    try:
        outcome = session.synthesize(SynthesisRequest(text=TEXT, seed=1))
        pid = session.engine.pid
        assert pid is not None and pid != os.getpid()
        worker_rss = psutil.Process(pid).memory_info().rss
        load, record = outcome.load, outcome.record
        assert load is not None and load.features["worker_pid"] == pid
        assert load.features["worker_start_s"] > 0
        # the worker started for the request's check (its start time is billed to the load);
        # loading the voice then grew the worker, not the app
        assert 0 < load.before.host_rss_bytes < load.after.host_rss_bytes
        assert record.features["worker_pid"] == pid
        # the worker's RSS, not the app's: within 15% of what psutil says of that PID now
        assert abs(record.after.host_rss_bytes - worker_rss) < 0.15 * worker_rss
        assert record.peaks.host_rss_source == "vmhwm"  # its own VmHWM, reset per event
        assert record.peaks.host_rss_bytes >= record.after.host_rss_bytes
        time.sleep(0.3)
        samples = session.worker_sampler.samples()
        assert len(samples) >= 3
        assert abs(samples[-1].host_rss_bytes - worker_rss) < 0.15 * worker_rss
        assert any(m.kind == "synthesis" for m in session.worker_sampler.markers())
        stored = store.events(kind="synthesis", session_id=session.session_id)
        assert len(stored) == 1
    finally:
        session.close()
        app_sampler.stop()
        store.close()


@pytest.mark.slow
def test_three_cleanup_levels_and_the_restart_frees_the_process(tmp_path: Path) -> None:
    session = SynthesisSession(FAULTS, isolate=True, device="cpu", policy_mode="off")
    try:
        session.synthesize(SynthesisRequest(text="hello"))
        pid = session.engine.pid
        light = session.cleanup("light")
        assert light.details["worker_pid"] == pid and light.gc_collected is not None
        assert session.loaded
        full = session.cleanup("full")
        assert not session.loaded and session.engine.pid == pid  # the process stays
        assert full.host_rss_freed_bytes > 48 * 2**20  # the 64 MiB ballast went back
        session.synthesize(SynthesisRequest(text="hello"))
        held = psutil.Process(pid).memory_info().rss
        restart = session.cleanup("restart")
        assert restart.details["worker_pid"] == pid and restart.details["exit_code"] == 0
        assert restart.details["upstream_modules_left"] == 0
        assert _gone(pid)
        assert restart.event.after.host_rss_bytes == 0
        assert restart.host_rss_freed_bytes == restart.event.before.host_rss_bytes
        assert restart.host_rss_freed_bytes > 0.8 * held
        again = session.synthesize(SynthesisRequest(text="hello again"))
        assert session.engine.pid not in (None, pid)
        assert again.load is not None and again.load.features["worker_start_s"] > 0
    finally:
        session.close()


def test_restart_needs_an_engine_in_a_worker() -> None:
    session = SynthesisSession(FAULTS, isolate=False, device="cpu", policy_mode="off")
    with pytest.raises(ValueError, match="run it isolated"):
        session.cleanup("restart")
    session.close()


# --------------------------------------------------------------------------- faults
def test_kill_9_mid_synthesis_is_a_clear_recorded_error_and_the_next_request_works(
        tmp_path: Path) -> None:
    store = open_store(tmp_path / "events.sqlite3")
    session = SynthesisSession(FAULTS, isolate=True, device="cpu", store=store,
                               policy_mode="off")
    try:
        session.synthesize(SynthesisRequest(text="warm up"))
        pid = session.engine.pid
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(WorkerDiedError, match="killed by SIGKILL"):
            session.synthesize(SynthesisRequest(text="sleep 30"))
        killer.join()
        events = store.events(kind="synthesis", session_id=session.session_id)
        failed = events.iloc[-1]
        assert "WorkerDiedError" in failed["error_type"]
        features = failed["features"]
        features = json.loads(features) if isinstance(features, str) else features
        assert features["outcome"] == "worker-died"
        outcome = session.synthesize(SynthesisRequest(text="after the crash"))
        assert outcome.result.sample_rate == 16000
        assert session.engine.pid not in (None, pid)
    finally:
        session.close()
        store.close()


def test_a_hung_worker_is_timed_out_and_ended() -> None:
    worker = WorkerEngine(FAULTS, timeout_s=3.0)
    try:
        worker.load("cpu")
        pid = worker.pid
        t0 = time.monotonic()
        with pytest.raises(WorkerTimeoutError, match="did not answer 'synthesize' within 3 s"):
            worker.synthesize(SynthesisRequest(text="hang"))
        assert time.monotonic() - t0 < 20
        assert _gone(pid) and worker.pid is None and not worker.loaded
        worker.load("cpu")  # a fresh worker
        assert worker.synthesize(SynthesisRequest(text="fine")).sample_rate == 16000
    finally:
        worker.close()


def test_memory_is_answered_while_a_synthesis_runs() -> None:
    worker = WorkerEngine(FAULTS)
    try:
        worker.load("cpu")
        done = threading.Event()
        thread = threading.Thread(
            target=lambda: (worker.synthesize(SynthesisRequest(text="sleep 6")), done.set()))
        thread.start()
        time.sleep(0.4)
        # answered while the synthesis still runs (it sleeps 6 s): not queued behind it
        result, _ = worker.process.call("memory", timeout_s=5.0)
        assert not done.is_set()
        assert "unavailable" in result or "torch_allocated_bytes" in result
        thread.join()
        assert done.is_set()
    finally:
        worker.close()


def test_a_cuda_error_ends_the_worker_and_the_next_call_starts_afresh() -> None:
    assert classify(RuntimeError("CUDA error: device-side assert triggered"))["poisoned"]
    assert not classify(RuntimeError("shape mismatch"))["poisoned"]
    worker = WorkerEngine(FAULTS)
    try:
        worker.load("cpu")
        pid = worker.pid
        with pytest.raises(Exception, match="CUDA error: an illegal memory access"):
            worker.synthesize(SynthesisRequest(text="cuda-error"))
        assert _gone(pid) and not worker.loaded
        worker.load("cpu")
        assert worker.pid != pid
    finally:
        worker.close()


def test_an_out_of_memory_error_in_the_worker_is_recovered_by_the_session() -> None:
    session = SynthesisSession(FAULTS, isolate=True, device="cpu", policy_mode="off")
    try:
        session.synthesize(SynthesisRequest(text="warm up"))
        outcome = session.synthesize(SynthesisRequest(text="oom once"))  # fails in the worker
        assert outcome.recovery is not None and "succeeded" in outcome.recovery
        assert "MemoryError in the engine worker" in (outcome.attempts[0].error_message or "")
        with pytest.raises(Exception, match="out of memory"):  # every time: no recovery
            session.synthesize(SynthesisRequest(text="oom"))
        assert session.last_cleanup is not None and session.last_cleanup.level == "full"
    finally:
        session.close()


# --------------------------------------------------------------------------- interpreters
def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_missing_or_unusable_interpreter_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(WorkerStartError, match="does not exist"):
        WorkerEngine("piper", python=str(tmp_path / "nope" / "python"))
    plain = tmp_path / "python"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(WorkerStartError, match="not executable"):
        WorkerEngine("piper", python=str(plain))
    with pytest.raises(WorkerStartError, match="is a folder"):
        WorkerEngine("piper", python=str(tmp_path))
    dies = _script(tmp_path / "dies", "#!/bin/sh\necho 'Python 2.7 says no' >&2\nexit 3\n")
    worker = WorkerEngine("piper", python=dies)
    with pytest.raises(WorkerStartError, match=r"exited with code 3.*Python 2.7 says no"):
        worker.load("cpu")


def test_garbage_and_another_protocol_version_are_refused(tmp_path: Path) -> None:
    garbage = _script(tmp_path / "garbage",
                      '#!/bin/bash\nprintf "Traceback? no: garbage" >&"$3"\nsleep 30\n')
    with pytest.raises(WorkerProtocolError, match="does not speak this app's protocol"):
        WorkerEngine("piper", python=garbage).load("cpu")
    header = json.dumps({"id": 0, "ok": True, "result": {"protocol": "glmtts-worker",
                                                         "version": 99}}).encode()
    frame = struct.pack(">I", len(header)) + header
    other = _script(tmp_path / "other", f"#!{sys.executable}\nimport os, sys, time\n"
                                        f"os.write(int(sys.argv[3]), {frame!r})\n"
                                        f"time.sleep(30)\n")
    with pytest.raises(WorkerProtocolError, match="version 99"):
        WorkerEngine("piper", python=other).load("cpu")


@pytest.mark.slow
def test_an_interpreter_without_torch_says_so(tmp_path: Path) -> None:
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    worker = WorkerEngine("piper", python=str(venv / "bin" / "python"))
    with pytest.raises(WorkerStartError, match=r"numpy is not installed.*torch is not installed"):
        worker.environment()


def test_default_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GLMTTS_PYTHON", raising=False)
    monkeypatch.delenv("GLMTTS_HOME", raising=False)
    assert default_python() == sys.executable
    venv_python = tmp_path / "GLM-TTS" / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("")
    monkeypatch.setenv("GLMTTS_HOME", str(tmp_path / "GLM-TTS"))
    assert default_python() == str(venv_python)
    monkeypatch.setenv("GLMTTS_PYTHON", "/opt/up/bin/python")
    assert default_python() == "/opt/up/bin/python"


# --------------------------------------------------------------------------- glm-tts stand-in
@pytest.mark.slow
def test_glm_tts_standin_in_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GLM-TTS stand-in (upstream's layout and namespace subpackages) in a worker: two
    syntheses, a 24 -> 32 kHz switch, a full cleanup that leaves no upstream module in the
    worker, a synthesis, a restart and a synthesis."""
    spec = importlib.util.spec_from_file_location("glmtts_tests_worker_standin",
                                                  HERE / "upstream_standin.py")
    assert spec is not None and spec.loader is not None
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    prompt_text = "I wonder if you'd like to have a burger with me."
    monkeypatch.setenv("PYTHONPATH", str(HERE / "worker_shim"))
    monkeypatch.setenv("GLMTTS_TEST_STANDIN", "1")
    home = standin.write_standin(tmp_path / "GLM-TTS")
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, standin.voiced(3.0, 24000), 24000)
    session = SynthesisSession("glm-tts", engine_options={"home": str(home)}, device="cpu",
                               policy_mode="advise")
    assert session.isolated

    def req(**kw) -> SynthesisRequest:
        return SynthesisRequest(text="If you need anything, come to Joey.", seed=7,
                                reference_audio=prompt, reference_text=prompt_text, **kw)

    try:
        first = session.synthesize(req(sample_rate=24000))
        assert first.result.metadata["engine"] == "glm-tts"
        session.synthesize(req(sample_rate=24000))
        rec = session.recommend(req(sample_rate=32000))
        assert rec.action == "none"  # a vocoder swap: the engine handles it
        switched = session.synthesize(req(sample_rate=32000))
        assert switched.result.sample_rate == 32000
        assert switched.load is not None and switched.load.features["reason"] == "sample_rate"
        full = session.cleanup("full")
        assert full.details["upstream_modules_left"] == 0
        assert session.synthesize(req()).result.sample_rate == 32000
        pid = session.engine.pid
        restart = session.cleanup("restart")
        assert restart.details["worker_pid"] == pid and _gone(pid)
        assert session.synthesize(req()).result.sample_rate in (24000, 32000)
        assert "glmtts_inference" not in sys.modules  # upstream never entered the app
    finally:
        session.close()


def test_a_worker_ends_when_the_app_is_killed() -> None:
    """No orphans: the worker sees its socket close when the app dies (even by kill -9)."""
    code = ("import sys, time\n"
            f"sys.path.insert(0, {str(HERE.parents[1])!r})\n"
            "from glmtts.worker.engine import WorkerEngine\n"
            f"w = WorkerEngine({FAULTS!r})\n"
            "w.load('cpu')\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(120)\n")
    app = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(app.stdout.readline())
        assert psutil.pid_exists(worker)
        app.kill()
        app.wait(10)
        assert _gone(worker)
    finally:
        if app.poll() is None:
            app.kill()
