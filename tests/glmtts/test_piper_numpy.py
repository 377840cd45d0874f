"""The piper voice's NumPy runtime against its torch runtime (the real voice, both real): the
same seed gives the same draws, so the same audio to within float rounding; its weights come
from the voice cache's ``.npz``, written once; its operations agree with torch's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from glmtts.engines.piper import PiperEngine
from glmtts.engines.piper import cache as voice_cache
from glmtts.engines.piper import vits_numpy as vn
from glmtts.errors import DeviceUnavailableError
from glmtts.request import SynthesisRequest

TEXTS = ("Hello there.",
         "The weather is lovely today, isn't it? We could walk to the harbour, then take the "
         "ferry home before it gets dark.")


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[PiperEngine, PiperEngine]:
    mp = pytest.MonkeyPatch()
    mp.setenv(voice_cache.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    torch_side, numpy_side = PiperEngine(), PiperEngine(runtime="numpy")
    torch_side.load("cpu")
    numpy_side.load("cpu")
    yield torch_side, numpy_side
    mp.undo()


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(("speed", "rate"), [(1.0, None), (1.4, 24000)])
def test_same_seed_same_audio(engines: tuple[PiperEngine, PiperEngine], text: str,
                              speed: float, rate: int | None) -> None:
    a, b = (e.synthesize(SynthesisRequest(text, seed=7, speed=speed, sample_rate=rate))
            for e in engines)
    assert a.sample_rate == b.sample_rate == (rate or 22050)
    assert len(a.audio) == len(b.audio) > a.sample_rate // 2
    assert float(np.abs(a.audio - b.audio).max()) < 1e-4
    assert b.metadata["runtime"] == "numpy" and a.metadata["runtime"] == "torch"
    other = engines[1].synthesize(SynthesisRequest(text, seed=8, speed=speed, sample_rate=rate))
    assert len(other.audio) != len(b.audio) or float(np.abs(other.audio - b.audio).max()) > 0.01


def test_windowed_decoder_equals_a_whole_run(engines: tuple[PiperEngine, PiperEngine],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = engines[1]._numpy
    assert model is not None
    z = np.random.default_rng(5).standard_normal((192, 700), dtype=np.float32) * 0.5
    windowed = model.decode(z)  # 700 frames: 44,800 last-stage steps, 6 windows
    monkeypatch.setattr(vn, "WINDOW", 10**9)
    whole = model.decode(z)
    assert windowed.shape == whole.shape == (700 * 256,)
    assert float(np.abs(windowed - whole).max()) < 1e-5


def test_weights_are_the_same_bytes(engines: tuple[PiperEngine, PiperEngine]) -> None:
    torch_side, numpy_side = engines
    assert numpy_side.model_bytes() == torch_side.model_bytes() > 50 * 2**20


def test_npz_written_once_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(voice_cache.CACHE_ENV, str(tmp_path))
    first = PiperEngine(runtime="numpy")
    first.load("cpu")
    (entry,) = (tmp_path / "voices").glob("*.npz")
    written = entry.stat().st_mtime_ns

    def no_torch(self: PiperEngine, target: str) -> None:
        raise AssertionError("the numpy runtime loaded the torch weights")

    monkeypatch.setattr(PiperEngine, "_load_torch", no_torch)
    second = PiperEngine(runtime="numpy")
    second.load("cpu")
    assert entry.stat().st_mtime_ns == written
    request = SynthesisRequest("Read from the cache.", seed=3)
    assert (first.synthesize(request).audio == second.synthesize(request).audio).all()
    monkeypatch.undo()
    monkeypatch.setenv(voice_cache.CACHE_ENV, str(tmp_path))
    whole = entry.read_bytes()
    # unusable entries (not a zip, empty, cut off): converted again from the torch weights
    for damaged in (b"not a zip file", b"", whole[: len(whole) // 2]):
        entry.write_bytes(damaged)
        assert voice_cache.load_arrays(first.voice_path) is None
        again = PiperEngine(runtime="numpy")
        again.load("cpu")
        assert (again.synthesize(request).audio == second.synthesize(request).audio).all()
        assert voice_cache.load_arrays(first.voice_path) is not None


def test_bad_runtime_and_device() -> None:
    with pytest.raises(ValueError, match="unknown runtime 'tensorflow'"):
        PiperEngine(runtime="tensorflow")
    with pytest.raises(DeviceUnavailableError, match="CPU only"):
        PiperEngine(runtime="numpy")._load_numpy("cuda")  # (no GPU here: the check alone)


# --------------------------------------------------------------------------- operations
def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize(("k", "dilation", "t"), [(1, 1, 50), (3, 2, 70), (7, 3, 9000)])
def test_conv1d(k: int, dilation: int, t: int) -> None:  # 9000 > SLICE: in time slices
    rng = np.random.default_rng(k)
    x = rng.standard_normal((6, t), dtype=np.float32)
    w = rng.standard_normal((5, 6, k), dtype=np.float32)
    b = rng.standard_normal(5, dtype=np.float32)
    want = F.conv1d(_t(x)[None], _t(w), _t(b), padding=dilation * (k - 1) // 2,
                    dilation=dilation)[0].numpy()
    assert np.abs(vn.conv1d(x, w, b, dilation) - want).max() < 1e-4


@pytest.mark.parametrize(("k", "stride", "pad"), [(16, 8, 4), (8, 4, 2), (5, 2, 1)])
def test_conv_transpose1d(k: int, stride: int, pad: int) -> None:  # (5, 2): the generic path
    rng = np.random.default_rng(k)
    x = rng.standard_normal((4, 33), dtype=np.float32)
    w = rng.standard_normal((4, 3, k), dtype=np.float32)
    b = rng.standard_normal(3, dtype=np.float32)
    want = F.conv_transpose1d(_t(x)[None], _t(w), _t(b), stride=stride, padding=pad)[0]
    got = vn.conv_transpose1d(x, w, b, stride, pad)
    assert got.shape == tuple(want.shape) and np.abs(got - want.numpy()).max() < 1e-4


def test_depthwise_conv_erf_and_gelu() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 40), dtype=np.float32)
    w = rng.standard_normal((4, 1, 3), dtype=np.float32)
    b = rng.standard_normal(4, dtype=np.float32)
    want = F.conv1d(_t(x)[None], _t(w), _t(b), padding=9, dilation=9, groups=4)[0].numpy()
    assert np.abs(vn.depthwise_conv1d(x, w, b, 9) - want).max() < 1e-5
    grid = np.linspace(-6, 6, 1001, dtype=np.float32)
    exact = np.array([math.erf(float(v)) for v in grid])
    assert np.abs(vn.erf(grid) - exact).max() < 2e-7
    assert np.abs(vn.gelu(grid) - F.gelu(_t(grid)).numpy()).max() < 1e-6


def test_cli_runtime_choice() -> None:
    from glmtts.cli import NUMPY_MAX_CHARS, UsageError, build_parser, engine_options

    def option(*argv: str, chars: int = 40) -> dict[str, object]:
        args = build_parser().parse_args(["synth", "x", "-o", "o.wav", *argv])
        return {k: v for k, v in engine_options(args, chars=chars).items() if k == "runtime"}

    assert option("--cpu") == option("--device", "cpu") == {"runtime": "numpy"}
    assert option("--cpu", chars=NUMPY_MAX_CHARS + 1) == {}  # long: torch pays its import
    assert option("--cpu", "--sample-rate", "24000") == {}  # resampled by torch anyway
    assert option() == {}  # auto device: torch (a GPU may be there)
    assert option("--cpu", "--isolate") == {}  # a worker process: torch, measured
    assert option("--runtime", "torch", "--cpu") == {"runtime": "torch"}
    with pytest.raises(UsageError, match="--runtime: the twin engine does not take it"):
        option("--engine", "twin", "--runtime", "numpy")


def test_cli_numpy_runtime_means_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from glmtts.cli import main

    monkeypatch.setenv(voice_cache.CACHE_ENV, str(tmp_path))
    out = tmp_path / "x.wav"
    assert main(["synth", "Hello there.", "-o", str(out), "--runtime", "numpy"]) == 0
    assert "device cpu, numpy runtime" in capsys.readouterr().out and out.stat().st_size > 1000
