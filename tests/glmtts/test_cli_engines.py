"""The command line's engine options, as a user runs them (real processes): GLM-TTS's reference
recording and switches, options an engine does not take (one line, exit 2, no traceback), and
engines in a worker (``--isolate``; glm-tts always, here on the upstream stand-in)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROMPT_TEXT = "I wonder if you'd like to have a burger with me."


def _standin():
    spec = importlib.util.spec_from_file_location("glmtts_tests_cli_standin",
                                                  HERE / "upstream_standin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "glmtts", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("cli-glmtts")
    standin = _standin()
    home = standin.write_standin(root / "GLM-TTS")
    prompt = root / "prompt.wav"
    sf.write(prompt, standin.voiced(3.0, 24000), 24000)
    env = {"GLMTTS_HOME": str(home), "PYTHONPATH": str(HERE / "worker_shim"),
           "GLMTTS_TEST_STANDIN": "1"}
    return home, prompt, env


@pytest.mark.parametrize(("args", "words"), [
    (("--phoneme",), "--phoneme: the piper engine does not take it"),
    (("--kv-cache",), "--kv-cache: the piper engine does not take it (Piper is not an LLM"),
    (("--sampling", "topk"), "--sampling: the piper engine does not take it"),
    (("--home", "/tmp"), "--home: the piper engine does not take it"),
])
def test_options_piper_does_not_take(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    done = run("synth", "Hello.", "-o", str(tmp_path / "x.wav"), *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {words}" or done.stderr.startswith(f"error: {words}")
    assert "Traceback" not in done.stderr and not (tmp_path / "x.wav").exists()


@pytest.mark.slow
def test_glm_tts_from_the_command_line(tmp_path: Path, checkout) -> None:
    _, prompt, env = checkout
    out = tmp_path / "clone.wav"
    done = run("synth", "If you need anything, come to Joey.", "-o", str(out), "--engine",
               "glm-tts", "--reference", str(prompt), "--reference-text", PROMPT_TEXT,
               "--sample-rate", "32000", "--kv-cache", "--sampling", "topk", "--seed", "3",
               "--cpu", env=env)
    assert done.returncode == 0, done.stderr
    assert "worker pid" in done.stdout and "Traceback" not in done.stderr
    info = sf.info(out)
    assert info.samplerate == 32000 and info.frames > 0  # written before the worker unloads


@pytest.mark.slow
def test_glm_tts_options_it_does_not_take_and_what_it_needs(tmp_path: Path, checkout) -> None:
    _, prompt, env = checkout
    out = str(tmp_path / "x.wav")
    voice = run("synth", "Hi there.", "-o", out, "--engine", "glm-tts", "--voice", str(prompt),
                "--cpu", env=env)
    assert voice.returncode == 2 and "Traceback" not in voice.stderr
    assert voice.stderr.startswith("error: --voice: the glm-tts engine does not take it "
                                   "(GLM-TTS clones the voice of the reference recording")
    bare = run("synth", "Hi there.", "-o", out, "--engine", "glm-tts", "--cpu", env=env)
    assert bare.returncode == 1 and "Traceback" not in bare.stderr
    assert "give a reference recording" in bare.stderr
    text_only = run("synth", "Hi there.", "-o", out, "--engine", "glm-tts", "--reference",
                    str(prompt), "--cpu", env=env)
    assert text_only.returncode == 1 and "type the transcript" in text_only.stderr


@pytest.mark.slow
def test_isolate_runs_piper_in_a_worker(tmp_path: Path) -> None:
    out = tmp_path / "w.wav"
    done = run("synth", "Hello from a worker.", "-o", str(out), "--isolate", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "worker pid" in done.stdout and sf.info(out).samplerate == 22050
    missing = run("synth", "Hello.", "-o", str(out), "--isolate", "--python",
                  str(tmp_path / "no-python"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "does not exist" in missing.stderr


@pytest.mark.slow
def test_glm_tts_batch_in_a_worker_exits_0(tmp_path: Path, checkout) -> None:
    """Three lines, one at 32 kHz: the batch ends 0 (closing the session once crashed)."""
    import json
    import shutil

    _, prompt, env = checkout
    shutil.copy(prompt, tmp_path / "prompt.wav")
    lines = [{"uttid": f"u{i}", "syn_text": f"Line number {i} is spoken.",
              "prompt_text": PROMPT_TEXT, "prompt_speech": "prompt.wav", "sample_rate": 24000}
             for i in range(3)]
    lines[1]["sample_rate"] = 32000
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = run("batch", str(tasks), "-o", str(tmp_path / "out"), "--engine", "glm-tts", "--cpu",
               env={**env, "GLMTTS_DB": str(tmp_path / "events.sqlite3")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 ok" in done.stdout
    rates = [sf.info(tmp_path / "out" / f"u{i}.wav").samplerate for i in range(3)]
    assert rates == [24000, 32000, 24000]
