"""Shared fixtures: the real embedded voice, loaded once per test session."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch  # only when GPU tests were collected: importing torch is slow

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def piper_deterministic():
    """The default voice on the CPU with both noise scales at 0 (output is a pure function)."""
    from glmtts.engines import create_engine

    engine = create_engine("piper", noise_scale=0.0, noise_w=0.0)
    engine.load("cpu")
    yield engine
    engine.unload()


@pytest.fixture(scope="session")
def piper_engine():
    """The default voice on the CPU with its own noise scales, as users run it."""
    from glmtts.engines import create_engine

    engine = create_engine("piper")
    engine.load("cpu")
    yield engine
    engine.unload()


@pytest.fixture(scope="session")
def ort_voice():
    """onnxruntime running the same ONNX voice: the reference implementation."""
    import onnxruntime as ort

    from glmtts.engines.piper import default_voice_path

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(default_voice_path()), opts,
                                providers=["CPUExecutionProvider"])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a small shared machine, idle OpenMP workers spin
    against other processes and make runs many times slower (memory does not depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture
def open_app(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Factory: a fresh AppTest of the whole app with its own SQLite file (and a new store and
    sampler), after its first run, optionally switched to ``page``; stopped afterwards."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from ui.state import app_resources

    monkeypatch.setenv("GLMTTS_DB", str(tmp_path / "events.sqlite3"))
    app_resources.clear()
    started = []

    def factory(page: str | None = None):
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"),
                               default_timeout=180)
        at.run()
        if page is not None:
            at.switch_page(page).run()
        assert not at.exception, at.exception
        started.append(at)
        return at

    yield factory
    if started:
        app_resources().sampler.stop()
        app_resources().idle.stop()
    app_resources.clear()


os.environ.setdefault("GLMTTS_DB", ":memory:")
