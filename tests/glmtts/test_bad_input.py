"""Every kind of bad input gets a typed error with a message a user can act on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glmtts.device import resolve_device
from glmtts.engines import create_engine
from glmtts.errors import (
    DeviceUnavailableError,
    InvalidRequestError,
    UnknownEngineError,
    VoiceError,
)
from glmtts.request import MAX_TEXT_CHARS, SynthesisRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \r\n"])
def test_empty_text(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        SynthesisRequest(text=text)


@pytest.mark.parametrize("text", ["?!...", "😀🎉🔥", "— ¿¡ …", "😀 !!! 🎉"])
def test_nothing_speakable(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="no letters or digits"):
        SynthesisRequest(text=text)


def test_control_characters_are_stripped_and_noted() -> None:
    req = SynthesisRequest(text="Hello\x00 wor\x07ld\x1b")
    assert req.text == "Hello world"
    assert any("control" in n for n in req.notes)


def test_lone_surrogates_are_stripped_and_noted() -> None:
    req = SynthesisRequest(text="Hi \udc80there\ud800")
    assert req.text == "Hi there"
    assert any("surrogate" in n for n in req.notes)


def test_whitespace_is_collapsed() -> None:
    assert SynthesisRequest(text="  a\n\n b\t c  ").text == "a b c"


def test_text_over_the_limit_names_the_limit() -> None:
    with pytest.raises(InvalidRequestError, match=f"{MAX_TEXT_CHARS:,}"):
        SynthesisRequest(text="a" * (MAX_TEXT_CHARS + 1))
    assert len(SynthesisRequest(text="a" * MAX_TEXT_CHARS).text) == MAX_TEXT_CHARS


def test_text_must_be_a_string() -> None:
    with pytest.raises(InvalidRequestError, match="string"):
        SynthesisRequest(text=b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", ["3", 1.5, True, -1, 2**64, [1]])
def test_seed_must_be_an_integer_in_range(seed: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SynthesisRequest(text="hi", seed=seed)  # type: ignore[arg-type]
    assert info.value.field == "seed"


@pytest.mark.parametrize("rate", [0, -22050, 1.5, "24000", True])
def test_sample_rate_must_be_a_positive_integer(rate: object) -> None:
    with pytest.raises(InvalidRequestError, match="sample rate"):
        SynthesisRequest(text="hi", sample_rate=rate)  # type: ignore[arg-type]


def test_unsupported_sample_rate_lists_the_supported(piper_engine) -> None:
    with pytest.raises(InvalidRequestError, match="22050, 24000, 32000"):
        piper_engine.synthesize(SynthesisRequest(text="hi", sample_rate=16000))


@pytest.mark.parametrize(("field", "value", "match"), [
    ("speed", 0.1, "speed"), ("speed", 3, "speed"), ("sampling_method", "beam", "sampling"),
    ("use_kv_cache", "yes", "use_kv_cache")])
def test_other_fields(field: str, value: object, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        SynthesisRequest(text="hi", **{field: value})


def test_unknown_engine() -> None:
    with pytest.raises(UnknownEngineError, match="available: piper"):
        create_engine("nope")


def test_voice_path_missing(tmp_path: Path) -> None:
    with pytest.raises(VoiceError, match="does not exist"):
        create_engine("piper", voice=str(tmp_path / "missing.onnx"))


def test_voice_path_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "voice.wav"
    path.write_bytes(b"RIFF")
    with pytest.raises(VoiceError, match=r"\.onnx"):
        create_engine("piper", voice=str(path))


def _voice_copy(tmp_path: Path, edit_config=None, model_bytes: bytes | None = None) -> Path:
    from glmtts.engines.piper import default_voice_path

    src = default_voice_path()
    dst = tmp_path / "custom.onnx"
    if model_bytes is None:
        dst.symlink_to(src)
    else:
        dst.write_bytes(model_bytes)
    cfg = json.loads(Path(str(src) + ".json").read_text())
    if edit_config:
        edit_config(cfg)
    Path(str(dst) + ".json").write_text(json.dumps(cfg))
    return dst


def test_another_voice_path_works(tmp_path: Path) -> None:
    engine = create_engine("piper", voice=str(_voice_copy(tmp_path)))
    engine.load("cpu")
    assert engine.voice_name == "custom"
    assert len(engine.synthesize(SynthesisRequest(text="Hi.", seed=1)).audio) > 0


def test_voice_config_missing(tmp_path: Path) -> None:
    dst = _voice_copy(tmp_path)
    Path(str(dst) + ".json").unlink()
    with pytest.raises(VoiceError, match=r"config .* is missing"):
        create_engine("piper", voice=str(dst))


def test_voice_config_not_json(tmp_path: Path) -> None:
    dst = _voice_copy(tmp_path)
    Path(str(dst) + ".json").write_text("{not json")
    with pytest.raises(VoiceError, match="not a JSON"):
        create_engine("piper", voice=str(dst))


def test_voice_config_that_does_not_match_the_model(tmp_path: Path) -> None:
    dst = _voice_copy(tmp_path, edit_config=lambda c: c.update(num_symbols=300))
    engine = create_engine("piper", voice=str(dst))
    with pytest.raises(VoiceError, match="do not match"):
        engine.load("cpu")


def test_voice_file_that_is_not_onnx(tmp_path: Path) -> None:
    dst = _voice_copy(tmp_path, model_bytes=b"this is not a protobuf \xff\xfe" * 100)
    engine = create_engine("piper", voice=str(dst))
    with pytest.raises(VoiceError, match="ONNX"):
        engine.load("cpu")


def test_cuda_where_there_is_none(clean_env) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailableError, match="--cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_cuda_visible_devices_minus_one_forces_cpu(clean_env) -> None:
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceUnavailableError, match="CUDA_VISIBLE_DEVICES"):
        resolve_device("cuda")


def test_unknown_device() -> None:
    with pytest.raises(DeviceUnavailableError, match="unknown device"):
        resolve_device("tpu")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "glmtts", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)


def test_cli_speaks_into_a_wav(tmp_path: Path) -> None:
    import soundfile as sf

    out = tmp_path / "out.wav"
    proc = _cli("synth", "Hello from the command line.", "-o", str(out), "--seed", "1",
                "--sample-rate", "24000", "--cpu")
    assert proc.returncode == 0, proc.stderr
    assert "real-time factor" in proc.stdout and "duration" in proc.stdout
    audio, rate = sf.read(out)
    assert rate == 24000 and len(audio) > rate


@pytest.mark.parametrize(("args", "message"), [
    (["synth", "hi", "-o", "x.wav", "--seed", "abc"], "seed must be a whole number"),
    (["synth", "!!!", "-o", "x.wav"], "nothing to speak"),
    (["synth", "hi", "-o", "x.wav", "--sample-rate", "8000"], "cannot produce 8000 Hz"),
    (["synth", "hi", "-o", "x.wav", "--voice", "/nope/v.onnx"], "does not exist"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _cli(*[a.replace("x.wav", str(tmp_path / "x.wav")) for a in args])
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.wav").exists()


def test_cli_output_folder_missing(tmp_path: Path) -> None:
    proc = _cli("synth", "hi", "-o", str(tmp_path / "no" / "such" / "dir" / "a.wav"), "--cpu")
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr




def test_unwritable_outputs_say_why(tmp_path) -> None:
    """-o naming a folder is a usage error before anything loads; a full disk names itself."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def synth(out: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "glmtts", "synth", "Hi there.", "-o", out],
                              cwd=root, capture_output=True, text=True, timeout=120)

    folder = synth(str(tmp_path))
    assert folder.returncode == 2 and "is a folder: give a file name" in folder.stderr
    full = synth("/dev/full")
    assert full.returncode == 1 and "No space left on device" in full.stderr
    assert "System error" not in full.stderr and "Traceback" not in full.stderr


def test_run_app_refuses_a_public_address_without_the_flag() -> None:
    """The app has no authentication: a non-loopback address needs an explicit flag, and the
    refusal says how to put authentication in front (nothing is installed or started)."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "run-app.sh"
    for address in ("0.0.0.0", "192.168.1.20", "::"):
        done = subprocess.run([str(script)], env={**os.environ, "GLMTTS_ADDRESS": address},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (address, done.stderr)
        assert "--i-know-this-is-public" in done.stderr and "authentication" in done.stderr
