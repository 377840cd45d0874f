"""The batch runner in-process: out-of-memory recovery per line, failures that never stop the
batch, durable results, resume after a torn manifest, the folder lock and the results zip."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from glmtts.batch import (
    BatchInputError,
    BatchRunner,
    LineResult,
    parse_tasks,
    read_manifest,
    run_batch,
    write_wav_atomic,
    zip_results,
)
from glmtts.batch.output import MANIFEST_NAME, OutputLock
from glmtts.session import SynthesisSession
from monitoring import open_store

WORDS = ["One.", "Two words.", "The third line.", "Four.", "Five is here.", "Six.", "Seven.",
         "Eight, nine.", "Nine.", "Ten at last."]


@pytest.fixture(scope="module")
def session():
    """One CPU session for the module (its model loads once, reloads after a recovery)."""
    store = open_store(":memory:")
    s = SynthesisSession(FAULTY, device="cpu", store=store, label="batch-tests")
    yield s
    s.close()
    store.close()


def _jsonl(texts: list[str], **extra) -> str:
    return "\n".join(json.dumps({"uttid": f"u{i:02d}", "syn_text": t, "seed": i, **extra})
                     for i, t in enumerate(texts, start=1)) + "\n"


FAULTY = "tests.fault_engines:FaultyPiper"  # the voice with an OOM switch (tests only)


def _plan(session, text: str, folder: Path | None = None):
    return parse_tasks(text, folders=[folder] if folder else [], engine=FAULTY,
                       engines={FAULTY: session.engine})


def _manifest(out: Path) -> list[dict]:
    return read_manifest(out / MANIFEST_NAME)


def test_oom_on_line_3_of_10_is_recovered_and_recorded(session, tmp_path: Path) -> None:
    """Fault injected in-process with the test engine's ``inject_oom`` (the switch
    ``GLMTTS_TEST_OOM`` sets in a subprocess): line 3's first attempt raises MemoryError."""
    plan = _plan(session, _jsonl(WORDS))
    session.engine.inject_oom("The third line")
    seen = []
    progress, results = run_batch(plan, tmp_path / "out", session,
                                  on_line=lambda r, p: seen.append((r.uttid, p.done)))
    assert [r.status for r in results] == ["ok"] * 10
    assert progress.all_ok and progress.ok == 10 and progress.done == 10
    assert progress.eta_s == 0.0 and progress.audio_s > 0
    assert seen == [(f"u{i:02d}", i) for i in range(1, 11)]
    entries = _manifest(tmp_path / "out")
    assert [e["uttid"] for e in entries] == [f"u{i:02d}" for i in range(1, 11)]
    third = entries[2]
    assert third["attempts"] == 2 and third["status"] == "ok"
    assert "Out of memory on the first attempt" in third["recovery"]
    assert third["recovery"].endswith("succeeded.")
    assert all(e["attempts"] == 1 and e["recovery"] is None for i, e in enumerate(entries)
               if i != 2)
    for entry in entries:
        assert entry["memory"] == "host_rss"
        assert isinstance(entry["retained_bytes"], int) and entry["peak_bytes"] > 0
        info = sf.info(str(tmp_path / "out" / entry["wav"]))
        assert info.samplerate == entry["sample_rate"]
        assert abs(info.frames / info.samplerate - entry["audio_s"]) < 1e-3


def test_a_line_that_still_fails_does_not_stop_the_batch(session, tmp_path: Path,
                                                         monkeypatch) -> None:
    plan = _plan(session, _jsonl(["First.", "Doomed twice.", "Third.", "Boom here.", "Last."]))
    session.engine.inject_oom("Doomed")  # the first attempt...
    session.engine.inject_oom("Doomed")  # ...and the retry
    engine_cls = type(session.engine)
    real = engine_cls._synthesize

    def buggy(self, request):
        if "Boom" in request.text:
            raise ZeroDivisionError("a bug in the engine")
        return real(self, request)

    monkeypatch.setattr(engine_cls, "_synthesize", buggy)
    progress, results = run_batch(plan, tmp_path / "out", session)
    assert [r.status for r in results] == ["ok", "failed", "ok", "failed", "ok"]
    assert "ran out of memory again" in results[1].reason and results[1].attempts == 2
    assert results[3].reason == "ZeroDivisionError: a bug in the engine"
    assert not progress.all_ok and (progress.ok, progress.failed) == (3, 2)
    assert [e["status"] for e in _manifest(tmp_path / "out")] == [r.status for r in results]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.wav")) == [
        "u01.wav", "u03.wav", "u05.wav"]


def test_invalid_lines_are_skipped_and_recorded(session, tmp_path: Path) -> None:
    text = _jsonl(["Good."]) + "not json\n" + '{"uttid": "u01", "syn_text": "dup"}\n'
    progress, results = run_batch(_plan(session, text), tmp_path / "out", session)
    # Invalid lines are reported first: every problem shows before the work starts.
    assert [(r.line, r.status) for r in results] == [(2, "skipped"), (3, "skipped"), (1, "ok")]
    assert results[1].reason == "duplicate uttid 'u01' (first on line 1)"
    assert progress.all_ok  # every valid line ended ok
    assert [e["status"] for e in _manifest(tmp_path / "out")] == ["skipped", "skipped", "ok"]


def test_resume_skips_done_lines_and_tolerates_a_torn_manifest(session, tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = _jsonl(WORDS[:4])
    run_batch(_plan(session, _jsonl(WORDS[:2])), out, session)  # "crashed" after two lines
    with open(out / MANIFEST_NAME, "ab") as fh:
        fh.write(b'{"line": 3, "uttid": "u03", "status": "o')  # torn write
    (out / ".u03.deadbeef.wav.tmp").write_bytes(b"RIFF half a wav")  # unfinished WAV
    before = (out / "u01.wav").stat().st_mtime_ns
    with pytest.raises(BatchInputError, match="resume it"), BatchRunner(
            _plan(session, text), out, session):
        pass
    with BatchRunner(_plan(session, text), out, session, resume=True) as runner:
        results = list(runner)
    assert any("unfinished WAV" in m for m in runner.messages)
    assert any("torn last manifest line" in m for m in runner.messages)
    assert [(r.uttid, r.resumed) for r in results] == [
        ("u01", True), ("u02", True), ("u03", False), ("u04", False)]
    assert runner.progress.all_ok and runner.progress.resumed == 2
    assert (out / "u01.wav").stat().st_mtime_ns == before  # not redone
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    raw = (out / MANIFEST_NAME).read_bytes()
    assert raw.endswith(b"\n")
    entries = [json.loads(line) for line in raw.splitlines()]  # every line whole JSON now
    assert [e["uttid"] for e in entries if e["status"] == "ok"] == ["u01", "u02", "u03", "u04"]


def test_resume_redoes_a_line_whose_request_changed(session, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(_plan(session, _jsonl(["Alpha.", "Beta."])), out, session)
    _, results = run_batch(_plan(session, _jsonl(["Alpha.", "Gamma now."])), out, session,
                           resume=True)
    assert [(r.uttid, r.resumed) for r in results] == [("u01", True), ("u02", False)]
    # ... and a line whose WAV vanished.
    (out / "u01.wav").unlink()
    _, results = run_batch(_plan(session, _jsonl(["Alpha.", "Gamma now."])), out, session,
                           resume=True)
    assert [(r.uttid, r.resumed) for r in results] == [("u01", False), ("u02", True)]
    # ... and a line whose WAV is truncated (or no longer audio): re-checked, redone.
    data = (out / "u02.wav").read_bytes()
    (out / "u02.wav").write_bytes(data[: len(data) // 2])
    (out / "u01.wav").write_bytes(b"not audio any more")
    _, results = run_batch(_plan(session, _jsonl(["Alpha.", "Gamma now."])), out, session,
                           resume=True)
    assert [(r.uttid, r.resumed) for r in results] == [("u01", False), ("u02", False)]
    assert (out / "u02.wav").read_bytes() != data[: len(data) // 2]


def test_a_folder_in_use_is_refused(session, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    lock = OutputLock(out)
    lock.acquire()
    try:
        with pytest.raises(BatchInputError, match="another batch is running"):
            run_batch(_plan(session, _jsonl(["Hi."])), out, session)
    finally:
        lock.release()
    assert run_batch(_plan(session, _jsonl(["Hi."])), out, session)[0].all_ok


def test_output_path_that_is_a_file_is_refused(session, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BatchInputError, match="not a folder"):
        run_batch(_plan(session, _jsonl(["Hi."])), tmp_path / "file", session)


def test_results_zip_holds_the_wavs_and_the_manifest(session, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(_plan(session, _jsonl(["Zip one.", "Zip two."]) + "bad\n"), out, session)
    with zipfile.ZipFile(io.BytesIO(zip_results(out))) as zf:
        assert sorted(zf.namelist()) == ["manifest.jsonl", "u01.wav", "u02.wav"]
        assert zf.read("u01.wav") == (out / "u01.wav").read_bytes()


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    audio = np.zeros(100, np.float32)
    target = write_wav_atomic(tmp_path / "a.wav", audio, 16000)
    assert sf.info(str(target)).frames == 100
    (tmp_path / "b.wav").mkdir()  # os.replace onto a folder fails
    with pytest.raises(OSError):
        write_wav_atomic(tmp_path / "b.wav", audio, 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]


def test_an_odd_earlier_entry_still_reads() -> None:
    result = LineResult.from_entry({"uttid": "a", "wav": "a.wav", "notes": 5, "x": 1}, 4)
    assert (result.line, result.status, result.resumed, result.notes) == (4, "ok", True, ())


def test_read_manifest_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(b'{"uttid": "a"}\n[1]\nnot json\n\n{"uttid": "b"}\n{"uttid": "c", "st')
    assert read_manifest(path) == [{"uttid": "a"}, {"uttid": "b"}]
    assert read_manifest(tmp_path / "missing.jsonl") == []
