"""Shared fixtures: the real embedded voice, loaded once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if "gpu" in item.keywords:
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


os.environ.setdefault("GLMTTS_DB", ":memory:")
