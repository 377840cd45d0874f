"""``python -m glmtts batch``: output, exit codes, one-line errors, and a kill -9 mid-batch
followed by ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from glmtts.batch import read_manifest
from glmtts.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _tasks(path: Path, texts: list[str], extra: str = "") -> Path:
    lines = [json.dumps({"uttid": f"utt{i:02d}", "syn_text": t, "seed": i})
             for i, t in enumerate(texts, start=1)]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    # One torch thread: on a shared machine two OpenMP threads fighting other processes make
    # each line several times slower (this test is about durability, not speed).
    full_env = {**os.environ, "GLMTTS_DB": ":memory:", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "glmtts", "batch", *args], cwd=ROOT,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_first_line(proc: subprocess.Popen, manifest: Path, limit_s: float = 120) -> None:
    """Return once the batch has finished at least one line (bounded in time)."""
    deadline = time.monotonic() + limit_s
    while not (manifest.exists() and manifest.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no manifest line within {limit_s:.0f} s"
        time.sleep(0.005)


# ----------------------------------------------------------------------------- in-process
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    tasks = _tasks(tmp_path / "t.jsonl", ["Hi."])
    (tmp_path / "blocker").write_text("a file where the output folder should go")
    cases = [
        ([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o1")], "does not exist"),
        ([str(tasks), "-o", str(tmp_path / "blocker" / "out")], "cannot create the output"),
        ([str(tasks), "-o", str(tmp_path / "blocker")], "not a folder"),
        ([str(tmp_path), "-o", str(tmp_path / "o2")], "is a folder"),
    ]
    for argv, message in cases:
        assert main(["batch", *argv, "--cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
        assert err.count("\n") == 1


def test_argparse_usage_error_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["batch", "t.jsonl"])  # -o is required
    assert exc.value.code == 2


def test_run_prints_lines_and_a_summary(tmp_path: Path, capsys) -> None:
    tasks = _tasks(tmp_path / "t.jsonl", ["Hello.", "Two."], extra="not json\n")
    out = tmp_path / "out"
    assert main(["batch", str(tasks), "-o", str(out), "--cpu"]) == 0  # invalid lines: still 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("3 line(s): 2 valid, 1 invalid; writing to ")
    assert text[1].startswith("[1/3] skipped line 3: not JSON")
    assert text[2].startswith("[2/3] ok      utt01  ") and "host RSS retained" in text[2]
    assert text[-2].startswith("summary: 2 ok, 0 failed, 1 skipped of 3 line(s); ")
    assert text[-1] == f"manifest: {out.resolve() / 'manifest.jsonl'}"
    # The same folder again: refused without --resume, nothing redone with it.
    assert main(["batch", str(tasks), "-o", str(out), "--cpu"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["batch", str(tasks), "-o", str(out), "--cpu", "--resume"]) == 0
    assert "2 ok (2 from an earlier run)" in capsys.readouterr().out


def test_no_valid_line_exits_1(tmp_path: Path, capsys) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"uttid": "a"}\n')
    assert main(["batch", str(tasks), "-o", str(tmp_path / "out"), "--cpu"]) == 1
    assert "missing syn_text" in capsys.readouterr().out
    tasks.write_text("\n\n")
    assert main(["batch", str(tasks), "-o", str(tmp_path / "out2"), "--cpu"]) == 1
    assert "holds no tasks" in capsys.readouterr().err


# ----------------------------------------------------------------------------- kill -9
@pytest.mark.slow
def test_kill_9_mid_batch_then_resume_finishes_every_line_once(tmp_path: Path) -> None:
    texts = [f"Line number {n}, short." for n in range(1, 15)]
    tasks = _tasks(tmp_path / "t.jsonl", texts)
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    faulty = "tests.fault_engines:FaultyPiper"  # the voice, with the test-only OOM switch
    proc = _cli(str(tasks), "-o", str(out), "--cpu", "--engine", faulty)
    try:
        _wait_for_first_line(proc, manifest)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done_before = [e["uttid"] for e in read_manifest(manifest)]
    assert 1 <= len(done_before) < len(texts), "the kill must land mid-batch"

    # The resumed run uses the test engine with its out-of-memory switch (GLMTTS_TEST_OOM): the
    # last line's first attempt runs out of memory and is retried.
    resumed = _cli(str(tasks), "-o", str(out), "--cpu", "--resume", "--engine", faulty,
                   env={"GLMTTS_TEST_OOM": "Line number 14"})
    stdout, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"({len(done_before)} from an earlier run)" in stdout

    entries = read_manifest(manifest)
    raw = manifest.read_bytes()
    assert raw.count(b"\n") == len(entries) and raw.endswith(b"\n")  # no torn line kept
    ok = [e["uttid"] for e in entries if e["status"] == "ok"]
    assert sorted(ok) == [f"utt{i:02d}" for i in range(1, 15)]  # each exactly once
    assert len(ok) == len(set(ok))
    last = next(e for e in entries if e["uttid"] == "utt14")
    assert last["attempts"] == 2 and "succeeded" in last["recovery"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([".batch.lock", "manifest.jsonl",
                            *(f"utt{i:02d}.wav" for i in range(1, 15))])
    for entry in entries:  # every WAV whole
        info = sf.info(str(out / entry["wav"]))
        assert abs(info.frames / info.samplerate - entry["audio_s"]) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_batch_stops_cleanly_with_exit_0(tmp_path: Path, sig: int) -> None:
    texts = [f"Signal test line {n}." for n in range(1, 12)]
    tasks = _tasks(tmp_path / "t.jsonl", texts)
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    proc = _cli(str(tasks), "-o", str(out), "--cpu")
    try:
        _wait_for_first_line(proc, manifest)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stdout + stderr
    entries = read_manifest(manifest)
    assert 1 <= len(entries) < len(texts)
    assert all(e["status"] == "ok" for e in entries)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
