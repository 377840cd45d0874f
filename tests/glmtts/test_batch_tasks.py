"""Batch JSONL checking: any input gives per-line results, never an exception; a fixture of bad
lines gives exactly the expected reasons; reference audio cannot escape its folders."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import string
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmtts.batch import BatchInputError, load_tasks, parse_tasks, safe_stem
from glmtts.batch.files import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_FILES,
    UploadBudget,
    extract_zip,
    new_space,
    remove_old_uploads,
    save_uploads,
    server_path,
    space_folder,
)
from glmtts.batch.tasks import MAX_STEM_BYTES, resolve_inside
from glmtts.engines import create_engine, engine_names
from glmtts.errors import InvalidRequestError

FIXTURES = Path(__file__).parent / "fixtures" / "batch"
SAFE = re.compile(r"^[^./\\\x00-\x1f\-][^/\\\x00-\x1f]*$")


def _wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), np.float32), rate)
    return path


@pytest.fixture(scope="module")
def engines():
    """The default engine object (created, not loaded): spares re-reading its config."""
    return {"piper": create_engine("piper")}


@pytest.fixture(scope="module")
def fixture_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bad-lines fixture beside the audio files it names (made here: WAVs are git-ignored)."""
    root = tmp_path_factory.mktemp("batch")
    folder = root / "in"
    folder.mkdir()
    shutil.copy(FIXTURES / "bad_lines.jsonl", folder)
    _wav(folder / "ok.wav", 1.0)
    _wav(folder / "sub" / "ok.wav", 1.0)
    _wav(folder / "long.wav", 31.0)
    (folder / "notaudio.wav").write_text("hello, I am text")
    (folder / "folder.wav").mkdir()
    _wav(root / "outside.wav", 1.0)
    os.symlink("../outside.wav", folder / "escape.wav")
    return folder


# ----------------------------------------------------------------------------- the fixture
def test_bad_lines_fixture_gives_exactly_the_expected_reasons(fixture_folder, engines) -> None:
    expected = json.loads((FIXTURES / "bad_lines.expected.json").read_text(encoding="utf-8"))
    plan = load_tasks(fixture_folder / "bad_lines.jsonl", engines=engines)
    problems = [[line, reason] for line, reason in plan.problems()]
    names = ", ".join(engine_names())
    from glmtts.reference_audio import supported_formats

    formats = ", ".join(supported_formats())
    wanted = [[line, reason.replace("{folder}", str(fixture_folder.resolve()))
               .replace("{engines}", names).replace("{formats}", formats)]
              for line, reason in expected["problems"]]
    assert problems == wanted
    tasks = [{"line": t.line, "uttid": t.uttid, "wav": t.wav_name, "notes": list(t.notes)}
             for t in plan.tasks]
    assert tasks == expected["tasks"]
    assert plan.lines == 29  # 30 lines, one blank


def test_ignored_fields_are_not_sent_to_piper(fixture_folder, engines) -> None:
    plan = load_tasks(fixture_folder / "bad_lines.jsonl", engines=engines)
    ok1 = next(t for t in plan.tasks if t.uttid == "ok1")
    assert ok1.prompt_speech == (fixture_folder / "ok.wav").resolve()  # validated...
    assert ok1.request.reference_audio is None  # ...but not used: Piper does not clone
    numeric = next(t for t in plan.tasks if t.uttid == "7")
    assert (numeric.request.sample_rate, numeric.request.seed) == (24000, 5)


def test_not_utf8_line_spoils_only_itself(engines) -> None:
    data = b'{"uttid": "a", "syn_text": "Hi."}\n{"uttid": "b", "syn_text": "\xff\xfe"}\n'
    plan = parse_tasks(data, engines=engines)
    assert [t.uttid for t in plan.tasks] == ["a"]
    assert plan.problems() == [(2, "not UTF-8 text (invalid start byte at byte 28)")]


def test_bom_and_crlf_are_accepted(engines) -> None:
    data = '\ufeff{"uttid": "a", "syn_text": "Hi."}\r\n{"uttid": "b", "syn_text": "Yo."}\r\n'
    plan = parse_tasks(data.encode(), engines=engines)
    assert [t.uttid for t in plan.tasks] == ["a", "b"] and not plan.invalid


def test_missing_tasks_file_is_a_batch_input_error(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match="does not exist"):
        load_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(BatchInputError, match="is a folder"):
        load_tasks(tmp_path)


# ----------------------------------------------------------------------------- properties
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                | st.text(max_size=30))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
FIELD_VALUES = {
    "uttid": st.text(max_size=20) | st.integers(-5, 10**6) | JSON_VALUES,
    "syn_text": st.text(max_size=60) | JSON_VALUES,
    "prompt_text": st.text(max_size=20) | JSON_VALUES,
    "prompt_speech": st.sampled_from(["ok.wav", "sub/ok.wav", "../x.wav", "/etc/passwd",
                                      "escape.wav", "a\x00b", "", "nope.wav"])
    | st.text(max_size=30) | JSON_VALUES,
    "sample_rate": st.sampled_from([22050, 24000, 32000, 0, -1, 44100, True, 24000.0])
    | JSON_VALUES,
    "use_kv_cache": st.booleans() | JSON_VALUES,
    "seed": st.integers(-2, 2**64) | JSON_VALUES,
    "engine": st.sampled_from(["piper", "nope", ""]) | JSON_VALUES,
}
ANY_OBJECTS = st.fixed_dictionaries({}, optional={**FIELD_VALUES, "other": JSON_VALUES})
#: Mostly valid lines, so that the valid path (file names, duplicates, audio) is exercised too.
LIKELY_VALID = st.fixed_dictionaries(
    {"syn_text": st.text(string.ascii_letters + " .,'", max_size=40).map(lambda t: t + "a")},
    optional={"uttid": st.text(string.ascii_letters + "_-./:ÄB说 ", max_size=8)
              | st.integers(0, 30),
              "prompt_speech": st.sampled_from(["ok.wav", "sub/ok.wav", "escape.wav",
                                                "../outside.wav", "long.wav", "folder.wav"]),
              "prompt_text": st.text(max_size=10),
              "sample_rate": st.sampled_from([22050, 24000, 32000, 44100]),
              "seed": st.integers(0, 100), "use_kv_cache": st.booleans()})
LINE_OBJECTS = LIKELY_VALID | ANY_OBJECTS


def _lines(objects: list, raw: list[bytes]) -> bytes:
    encoded = [json.dumps(o).encode() for o in objects]
    return b"\n".join(encoded + raw)


def _expected_lines(data: bytes) -> set[int]:
    """Lines that must give exactly one entry: all but the blank ones (a line that is not
    UTF-8 is not blank: it is an invalid line)."""
    out = set()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            out.add(number)
            continue
        if text.strip():
            out.add(number)
    return out


def _check_plan(plan, data: bytes) -> None:
    lines = [e.line for e in plan.entries()]
    assert len(lines) == len(set(lines)) and set(lines) == _expected_lines(data)
    for bad in plan.invalid:
        assert bad.reasons and all(isinstance(r, str) and r for r in bad.reasons)
    stems = [t.stem.casefold() for t in plan.tasks]
    assert len(stems) == len(set(stems))
    uttids = [t.uttid for t in plan.tasks]
    assert len(uttids) == len(set(uttids))
    for task in plan.tasks:
        assert task.request.text.strip()
        assert SAFE.match(task.stem) and len(task.stem.encode()) <= MAX_STEM_BYTES
        if task.prompt_speech is not None:
            assert task.prompt_speech.is_relative_to(plan.folders[0])


_ENGINE = create_engine("piper")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(objects=st.lists(LINE_OBJECTS, max_size=8),
       raw=st.lists(st.binary(max_size=40), max_size=4))
def test_any_jsonl_gives_per_line_results(objects, raw, fixture_folder) -> None:
    data = _lines(objects, raw)
    plan = parse_tasks(data, folders=[fixture_folder], engines={"piper": _ENGINE})
    _check_plan(plan, data)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_text_never_raises(text: str) -> None:
    plan = parse_tasks(text, engines={"piper": _ENGINE})
    _check_plan(plan, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_safe_stem_is_a_plain_file_name(uttid: str) -> None:
    stem = safe_stem(uttid)
    if stem is None:
        assert not any(ch.isalnum() for ch in uttid) or not uttid.strip("._- ")
        return
    assert SAFE.match(stem), stem
    assert stem not in (".", "..") and len(stem.encode("utf-8")) <= MAX_STEM_BYTES
    assert any(ch.isalnum() for ch in stem)
    assert safe_stem(stem) == stem  # sanitising is idempotent


@pytest.mark.parametrize(("uttid", "stem"), [
    ("utt_001", "utt_001"), ("a/b", "a_b"), ("../../etc/passwd", "etc_passwd"),
    (".hidden", "hidden"), ("-rf", "rf"), ("CON", "_CON"), ("nul.txt", "_nul.txt"),
    ("说话人 01", "说话人_01"), ("a\x00b", "a_b"), ("...", None), ("", None)])
def test_safe_stem_examples(uttid: str, stem: str | None) -> None:
    assert safe_stem(uttid) == stem


def test_names_that_differ_only_in_case_collide(engines) -> None:
    data = '{"uttid": "Utt", "syn_text": "a"}\n{"uttid": "utt", "syn_text": "b"}\n'
    plan = parse_tasks(data, engines=engines)
    assert plan.problems() == [(2, "uttid 'utt' and 'Utt' (line 1) would both be saved as "
                                   "utt.wav")]


# ----------------------------------------------------------------------------- path escapes
@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    inside, outside = tmp_path / "in", tmp_path / "out"
    _wav(inside / "a.wav", 0.5)
    _wav(inside / "deep" / "b.wav", 0.5)
    _wav(outside / "secret.wav", 0.5)
    return inside.resolve(), outside.resolve()


@pytest.mark.parametrize("value", ["../out/secret.wav", "deep/../../out/secret.wav",
                                   "deep/../a.wav", "..\\out\\secret.wav", "./../out/x.wav"])
def test_dot_dot_is_refused(folders, value: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"'\.\.' is refused"):
        resolve_inside(value, [folders[0]])


def test_absolute_paths_are_refused_even_inside(folders) -> None:
    inside, outside = folders
    for value in [str(outside / "secret.wav"), str(inside / "a.wav"), "C:\\x.wav", "\\\\srv\\x"]:
        with pytest.raises(InvalidRequestError, match="absolute paths are refused"):
            resolve_inside(value, [inside])


def test_symlinks_that_escape_are_refused(folders) -> None:
    inside, outside = folders
    os.symlink(outside / "secret.wav", inside / "file-link.wav")  # absolute link to a file
    os.symlink(outside, inside / "dir-link")  # a folder link
    os.symlink("../../out/secret.wav", inside / "deep" / "rel-link.wav")  # relative link
    for value in ["file-link.wav", "dir-link/secret.wav", "deep/rel-link.wav"]:
        with pytest.raises(InvalidRequestError, match="link leading outside"):
            resolve_inside(value, [inside])


def test_symlinks_inside_are_followed(folders) -> None:
    inside, _ = folders
    os.symlink("deep/b.wav", inside / "alias.wav")
    assert resolve_inside("alias.wav", [inside]) == inside / "deep" / "b.wav"
    assert resolve_inside("deep/b.wav", [inside]) == inside / "deep" / "b.wav"


def test_broken_and_looping_links_are_reported(folders) -> None:
    inside, _ = folders
    os.symlink("nowhere.wav", inside / "broken.wav")
    os.symlink("loop2.wav", inside / "loop1.wav")
    os.symlink("loop1.wav", inside / "loop2.wav")
    for value in ["broken.wav", "loop1.wav"]:
        with pytest.raises(InvalidRequestError, match="cannot be resolved"):
            resolve_inside(value, [inside])


def test_uploaded_files_folder_is_allowed_too(folders, tmp_path: Path, engines) -> None:
    inside, outside = folders
    (inside / "t.jsonl").write_text('{"uttid": "u", "syn_text": "Hi.", '
                                    '"prompt_speech": "secret.wav"}\n')
    assert load_tasks(inside / "t.jsonl", engines=engines).invalid
    plan = load_tasks(inside / "t.jsonl", extra_folders=[outside], engines=engines)
    assert [t.prompt_speech for t in plan.tasks] == [outside / "secret.wav"]


def test_server_path_stays_inside_its_folders(folders) -> None:
    inside, outside = folders
    (inside / "t.jsonl").write_text("{}\n")
    (outside / "t.jsonl").write_text("{}\n")
    assert server_path("t.jsonl", [inside]) == inside / "t.jsonl"
    assert server_path(str(inside / "t.jsonl"), [inside]) == inside / "t.jsonl"
    os.symlink(outside / "t.jsonl", inside / "link.jsonl")
    (inside / "deep").mkdir(exist_ok=True)
    for value in [str(outside / "t.jsonl"), "../out/t.jsonl", "link.jsonl", "nope.jsonl",
                  "deep", "/etc/shadow", "/etc/nope"]:
        with pytest.raises(BatchInputError) as err:
            server_path(value, [inside])
        # outside, missing or a folder: the same words, so nothing leaks about other files
        assert str(err.value) == (f"no JSONL file {value} in the folders this server reads "
                                  f"tasks from ({inside}; set GLMTTS_BATCH_ROOT to change them)")


def test_zip_members_that_escape_are_refused(tmp_path: Path) -> None:
    buf = tmp_path / "refs.zip"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("prompts/a.wav", b"RIFF")
        zf.writestr("../evil.wav", b"x")
        zf.writestr("/abs.wav", b"x")
        link = zipfile.ZipInfo("link.wav")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "up"
    dest.mkdir()
    problems = extract_zip(buf.read_bytes(), dest)
    assert (dest / "prompts" / "a.wav").read_bytes() == b"RIFF"
    assert len(problems) == 3 and all("refused" in p for p in problems)
    assert not (tmp_path / "evil.wav").exists() and not (dest / "link.wav").exists()
    assert sorted(p.name for p in dest.rglob("*")) == ["a.wav", "prompts"]


def test_uploads_are_saved_once_by_plain_name(tmp_path: Path) -> None:
    dest = tmp_path / "up"
    problems = save_uploads([("dir/a.wav", b"1"), (".hidden", b"2"), ("b.zip", b"nozip")], dest)
    assert (dest / "a.wav").read_bytes() == b"1"
    assert problems == ["'.hidden': refused (not a plain file name)",
                        "not a zip file (File is not a zip file)"]
    assert save_uploads([("c.wav", b"3")], dest) == problems  # already saved: nothing redone
    assert not (dest / "c.wav").exists()


def test_printable_uttids_round_trip(engines) -> None:
    uttids = [f"utt-{c}" for c in string.ascii_letters[:5]]
    data = "\n".join(json.dumps({"uttid": u, "syn_text": "Hello."}) for u in uttids)
    assert [t.uttid for t in parse_tasks(data, engines=engines).tasks] == uttids


def test_cloning_engines_get_the_full_reference_check_before_running(tmp_path: Path) -> None:
    """Engines that clone a voice check the clip themselves at run time (after loading a
    model); validation applies the same check first, so a bad clip never costs a load."""
    if "twin" not in engine_names():
        pytest.skip("no voice-cloning engine registered")
    pytest.importorskip("glmtts.reference_audio")
    _wav(tmp_path / "short.wav", 1.0)
    data = ('{"uttid": "a", "syn_text": "Hi.", "engine": "twin", "prompt_speech": "short.wav"}\n'
            '{"uttid": "b", "syn_text": "Hi.", "prompt_speech": "short.wav"}\n')
    plan = parse_tasks(data, folders=[tmp_path], engines={"piper": _ENGINE})
    assert [t.uttid for t in plan.tasks] == ["b"]  # Piper ignores the clip: only checked lightly
    ((line, reason),) = plan.problems()
    assert line == 1 and reason.startswith("prompt_speech 'short.wav': ")


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    bomb = _zip({f"r{i}.wav": bytes(MAX_UPLOAD_BYTES // 2) for i in range(3)})
    assert len(bomb) < 2 * 2**20  # a small download that would unpack past the cap
    dest = tmp_path / "up"
    dest.mkdir()
    (problem,) = extract_zip(bomb, dest)
    assert "more than one upload may hold" in problem and "nothing was unpacked" in problem
    assert not list(dest.iterdir())
    many = _zip({f"r{i}.wav": b"x" for i in range(MAX_UPLOAD_FILES + 1)})
    (problem,) = extract_zip(many, dest)
    assert f"holds {MAX_UPLOAD_FILES + 1:,} files" in problem and not list(dest.iterdir())


def test_a_zip_that_lies_about_its_size_leaves_nothing(tmp_path: Path) -> None:
    data = bytearray(_zip({"a.wav": bytes(4096), "b.wav": bytes(4096)}))
    # the central directory says each member unpacks to 10 bytes; the data say 4,096
    for header in (b"PK\x01\x02", b"PK\x03\x04"):
        start = 0
        while (at := data.find(header, start)) >= 0:
            offset = at + (24 if header == b"PK\x01\x02" else 22)
            data[offset:offset + 4] = (10).to_bytes(4, "little")
            start = at + 4
    dest = tmp_path / "up"
    dest.mkdir()
    problems = extract_zip(bytes(data), dest, UploadBudget(bytes_left=5000))
    # no more than declared is read; the members then fail their checksum and are dropped
    assert len(problems) == 2 and all("cannot be unpacked" in p for p in problems), problems
    assert not list(dest.iterdir())


def test_a_session_space_caps_what_all_its_uploads_hold(tmp_path: Path, monkeypatch) -> None:
    import glmtts.batch.files as files

    monkeypatch.setenv("GLMTTS_BATCH_DIR", str(tmp_path))
    monkeypatch.setattr(files, "MAX_SPACE_BYTES", 3000)
    space = new_space()
    assert space != new_space() and len(space) == 32
    assert save_uploads([("a.wav", bytes(2000))], space_folder(space) / "one") == []
    (problem,) = save_uploads([("b.wav", bytes(2000))], space_folder(space) / "two")
    # 3,000 - 2,000 - the first upload's 2-byte marker file
    assert "more bytes than this session's uploads may hold (998 left)" in problem
    # another session has its own space
    assert save_uploads([("b.wav", bytes(2000))], space_folder(new_space()) / "two") == []
    for bad in ["../x", "g" * 32, space.upper(), ""]:
        with pytest.raises(ValueError):
            space_folder(bad)


def test_old_upload_spaces_are_removed_and_results_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLMTTS_BATCH_DIR", str(tmp_path))
    old, fresh = new_space(), new_space()
    for space in (old, fresh):
        save_uploads([("a.wav", b"1")], space_folder(space) / "x")
    (tmp_path / "runs" / old).mkdir(parents=True)
    now = time.time()
    for path in [space_folder(old), *space_folder(old).rglob("*")]:
        os.utime(path, (now - 25 * 3600, now - 25 * 3600))
    assert remove_old_uploads(now=now) == [space_folder(old)]
    assert not space_folder(old).exists() and space_folder(fresh).exists()
    assert (tmp_path / "runs" / old).exists()
    monkeypatch.setenv("GLMTTS_BATCH_UPLOAD_TTL_H", "0")  # 0: keep everything
    for path in [space_folder(fresh), *space_folder(fresh).rglob("*")]:
        os.utime(path, (now - 99 * 3600, now - 99 * 3600))
    assert remove_old_uploads(now=now) == []
