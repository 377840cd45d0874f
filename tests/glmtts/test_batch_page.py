"""AppTest of the Batch page through its server-path input (AppTest cannot upload files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture
def batch_app(open_app, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The whole app with its own database, batch folder and allowed input folder, on the
    Batch page."""
    monkeypatch.setenv("GLMTTS_BATCH_DIR", str(tmp_path / "batch"))
    monkeypatch.setenv("GLMTTS_BATCH_ROOT", str(tmp_path / "inputs"))
    (tmp_path / "inputs").mkdir()
    return open_app("pages/batch.py")


def _table(at) -> list[dict]:
    return at.dataframe[-1].value.to_dict("records")


def test_batch_page_runs_a_server_jsonl_and_offers_the_zip(batch_app, tmp_path: Path) -> None:
    at = batch_app
    tasks = tmp_path / "inputs" / "tasks.jsonl"
    lines = [{"uttid": "p1", "syn_text": "Page one.", "seed": 1},
             {"uttid": "p2", "syn_text": "Page two.", "use_kv_cache": True},
             {"uttid": "p3", "syn_text": ""}]
    tasks.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    at.radio(key="batch_source").set_value("Path on the server").run()
    at.text_input(key="batch_path").set_value("tasks.jsonl").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["lines"], metrics["valid"], metrics["invalid (skipped)"]) == ("3", "2", "1")

    at.button(key="batch_run").click().run()
    assert not at.exception, at.exception
    rows = _table(at)
    assert [(r["uttid"], r["status"]) for r in rows] == [("p1", "ok"), ("p2", "ok"),
                                                        ("p3", "skipped")]
    assert "the text is empty" in rows[2]["reason / notes"]
    assert "use_kv_cache ignored" in rows[1]["reason / notes"]
    assert rows[0]["retained"] and rows[0]["memory"] == "host RSS"
    (bar,) = at.get("progress")
    assert bar.proto.value == 100 and bar.proto.text.startswith("3/3 lines · 2 ok · 0 failed")
    same = any(r["peak"] == r["retained"] for r in rows if r["retained"])
    noted = any("peak and retained are often the same" in c.value for c in at.caption)
    assert noted == same  # said exactly when a CPU line shows the same peak and retained
    assert not at.success  # one line was skipped: the summary counts it, in a warning
    assert at.warning[0].value.startswith("2 of 3 lines ok, 1 skipped (invalid), 0 failed.")
    (download,) = at.get("download_button")
    assert download.proto.label.startswith("Download results")
    run_dirs = [p for p in (tmp_path / "batch" / "runs").iterdir() if p.name.startswith("tasks")]
    assert len(run_dirs) == 1
    data = (run_dirs[0] / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert [(json.loads(x)["line"], json.loads(x)["status"]) for x in data] == [
        (3, "skipped"), (1, "ok"), (2, "ok")]  # invalid lines are reported first

    # Running the same tasks again resumes: nothing is redone.
    at.button(key="batch_run").click().run()
    assert [r["status"] for r in _table(at)] == ["ok (earlier run)", "ok (earlier run)",
                                                 "skipped"]


def test_batch_page_refuses_a_path_outside_its_folders(batch_app, tmp_path: Path) -> None:
    at = batch_app
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text('{"uttid": "x", "syn_text": "Hi."}\n')
    os.symlink(outside, tmp_path / "inputs" / "link.jsonl")
    at.radio(key="batch_source").set_value("Path on the server").run()
    answers = set()
    for value in [str(outside), "../elsewhere.jsonl", "link.jsonl", "/etc/shadow", "/etc/nope",
                  "/etc", "missing.jsonl"]:
        at.text_input(key="batch_path").set_value(value).run()
        assert not at.exception
        # outside, missing or a folder: one answer, which tells nothing about other files
        answers.add(at.error[0].value.replace(value, "<path>"))
        assert not [b for b in at.button if b.key == "batch_run"]
    assert not at.get("download_button")
    (answer,) = answers
    assert answer.startswith("no JSONL file <path> in the folders this server reads tasks from")
