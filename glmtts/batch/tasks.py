"""Reading and checking a batch JSONL before anything runs.

One task per line, with upstream GLM-TTS's fields (``uttid``, ``syn_text``, ``prompt_text``,
``prompt_speech``) and optional ``sample_rate``, ``use_kv_cache``, ``seed`` and ``engine``. Every
line ends up either as a :class:`BatchTask` (it will run) or an :class:`InvalidLine` (it is
skipped), with every problem found on it, never as an exception: bad input is data here.

Reference audio (``prompt_speech``) must lie inside one of the allowed folders (the JSONL's own
folder, and the folder of uploaded files): absolute paths and ``..`` are refused outright, and a
path that exists is resolved (symlinks followed) and must still be inside an allowed folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from glmtts.engines import DEFAULT_ENGINE
from glmtts.engines.base import Engine
from glmtts.errors import GlmTtsError, InvalidRequestError
from glmtts.request import MAX_TEXT_CHARS, SynthesisRequest
from glmtts.say import N_, Listing, Say, message_of

log = logging.getLogger(__name__)

#: Longest reference (prompt) recording accepted, in seconds (upstream uses 2-30 s prompts).
MAX_PROMPT_SECONDS = 30.0
#: Longest file name stem made from an ``uttid``, in UTF-8 bytes (file systems allow 255).
MAX_STEM_BYTES = 150
#: Fields a line may carry; anything else is reported as ignored.
KNOWN_FIELDS = ("uttid", "syn_text", "prompt_text", "prompt_speech", "sample_rate",
                "use_kv_cache", "seed", "engine")
#: Line field -> the request knob (see :data:`glmtts.engines.base.KNOBS`) it feeds.
FIELD_KNOBS = {"prompt_speech": "reference_audio", "prompt_text": "reference_audio",
               "sample_rate": "sample_rate", "use_kv_cache": "use_kv_cache", "seed": "seed"}
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


class BatchInputError(GlmTtsError):
    """The batch as a whole cannot start: tasks file or output folder unusable (a usage error)."""


@dataclass(frozen=True)
class BatchTask:
    """One valid line, ready to run.

    Attributes:
        line: 1-based line number in the JSONL file.
        uttid: The line's id (its line number as ``line-N`` when it had none).
        stem: File name stem of its WAV (``uttid`` sanitised); unique in the batch, ignoring case.
        engine: Engine that speaks it.
        request: The validated request (fields the engine ignores are left out).
        prompt_speech: Resolved path of the reference recording, or None.
        prompt_text: Transcript of the reference recording, or None.
        notes: What was changed or ignored on this line, one sentence each.
    """

    line: int
    uttid: str
    stem: str
    engine: str
    request: SynthesisRequest
    prompt_speech: Path | None = None
    prompt_text: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def wav_name(self) -> str:
        """File name of its WAV inside the output folder."""
        return f"{self.stem}.wav"

    @property
    def key(self) -> str:
        """Digest of what the line asks for: a resumed run redoes a line whose key changed."""
        req = self.request
        what = [self.engine, req.text, req.sample_rate, req.seed, req.use_kv_cache,
                str(self.prompt_speech) if self.prompt_speech else None, self.prompt_text]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InvalidLine:
    """A line that will not run, with every reason found on it.

    Attributes:
        line: 1-based line number.
        uttid: Its id when one could be read, else None.
        reasons: One sentence per problem.
    """

    line: int
    uttid: str | None
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return Say("{reasons}", reasons=Listing(self.reasons, "; "))


@dataclass(frozen=True)
class BatchPlan:
    """A checked JSONL: what will run and what will not.

    Attributes:
        source: The JSONL file, or None when parsed from memory.
        folders: Folders reference audio may come from (resolved).
        tasks: Valid lines, in file order.
        invalid: Invalid lines, in file order.
    """

    source: Path | None
    folders: tuple[Path, ...]
    tasks: tuple[BatchTask, ...]
    invalid: tuple[InvalidLine, ...]

    @property
    def lines(self) -> int:
        """Non-blank lines in the file."""
        return len(self.tasks) + len(self.invalid)

    def problems(self) -> list[tuple[int, str]]:
        """Every problem as ``(line number, reason)``, in file order."""
        return [(bad.line, reason) for bad in self.invalid for reason in bad.reasons]

    def entries(self) -> list[BatchTask | InvalidLine]:
        """Valid and invalid lines together, in file order."""
        return sorted([*self.tasks, *self.invalid], key=lambda e: e.line)

    def run_order(self) -> list[BatchTask | InvalidLine]:
        """The order a run reports lines in: the invalid ones first (nothing to run, so every
        problem shows before the work starts), then the valid ones grouped by engine in order
        of first appearance, file order within a group (each engine's model loads once)."""
        first: dict[str, int] = {}
        for task in self.tasks:
            first.setdefault(task.engine, len(first))
        return [*self.invalid, *sorted(self.tasks, key=lambda t: first[t.engine])]


# --------------------------------------------------------------------------- file names
def safe_stem(uttid: str) -> str | None:
    """A file name stem for ``uttid``: letters, digits, ``.``, ``_`` and ``-`` kept (Unicode
    letters included), every other run of characters (and ``..``) replaced by ``_``; no leading
    dot, dash or underscore;
    at most :data:`MAX_STEM_BYTES` bytes; Windows device names prefixed with ``_``.

    Returns None when nothing usable is left (no letter or digit).
    """
    text = unicodedata.normalize("NFC", uttid)
    out: list[str] = []
    for ch in text:
        if ch.isalnum() or ch in "._-":
            out.append(ch)
        elif not out or out[-1] != "_":
            out.append("_")
    stem = re.sub(r"\.{2,}", "_", "".join(out)).lstrip("._-").rstrip(". ")
    while len(stem.encode("utf-8")) > MAX_STEM_BYTES:
        stem = stem[:-1]
    stem = stem.rstrip(". ")
    if not any(ch.isalnum() for ch in stem):
        return None
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    return stem


# --------------------------------------------------------------------------- folders
def is_inside(path: Path, folders: Sequence[Path]) -> bool:
    """Whether the resolved ``path`` lies in (or is) one of the resolved ``folders``."""
    return any(path == f or path.is_relative_to(f) for f in folders)


def resolve_inside(value: str, folders: Sequence[Path]) -> Path:
    """Find the relative path ``value`` in the first of ``folders`` holding it, symlinks resolved.

    Raises:
        InvalidRequestError: absolute, contains ``..``, not found, or (after resolving links)
            outside every folder.
    """
    if "\x00" in value:
        raise InvalidRequestError("path", N_("it contains a NUL character"))
    if value.startswith(("/", "\\")) or PureWindowsPath(value).drive:
        raise InvalidRequestError("path", N_("absolute paths are refused: give a path relative "
                                             "to the JSONL's folder"))
    rel = PurePosixPath(value.replace("\\", "/"))
    if ".." in rel.parts:
        raise InvalidRequestError("path", N_("'..' is refused: the file must be inside the "
                                             "JSONL's folder (or the uploaded files)"))
    if not folders:
        raise InvalidRequestError("path", N_("no folder is allowed for reference audio"))
    for folder in folders:
        candidate = folder / rel
        try:
            if not (candidate.is_symlink() or candidate.exists()):
                continue
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError, ValueError) as exc:  # loop, name too long, bad char
            raise InvalidRequestError("path", Say("it cannot be resolved ({error})",
                                                  error=str(exc))) from None
        if not is_inside(resolved, folders):
            raise InvalidRequestError("path", N_("it is a link leading outside the allowed "
                                                 "folders"))
        return resolved
    where = " or ".join(str(f) for f in folders)
    raise InvalidRequestError("path", Say("not found in {where}", where=where))


def check_audio(path: Path) -> float:
    """Seconds of audio in ``path``, from its header (nothing is decoded): the one
    reference-audio gate (:func:`glmtts.reference_audio.check_header`), its refusal as an
    :class:`InvalidRequestError`."""
    from glmtts.reference_audio import ReferenceAudioError, check_header

    try:
        info = check_header(path, max_s=MAX_PROMPT_SECONDS)
    except ReferenceAudioError as exc:
        raise InvalidRequestError("path", message_of(exc)) from None
    if not info.frames:
        raise InvalidRequestError("path", N_("it holds no audio"))
    return info.frames / info.samplerate


# --------------------------------------------------------------------------- whole file
def parse_tasks(data: bytes | str, *, folders: Sequence[Path] = (),
                engine: str = DEFAULT_ENGINE, engines: Mapping[str, Engine] | None = None,
                source: Path | None = None) -> BatchPlan:
    """Check every line of a JSONL document; never raises for bad content.

    Args:
        data: The JSONL text (bytes are decoded per line, so one bad line spoils only itself).
        folders: Folders reference audio may come from; the first is the JSONL's own.
        engine: Engine of lines that name none.
        engines: Engine objects to ask about capabilities, by name (e.g. the session's, with
            its voice); others are created (not loaded) as needed.
        source: The file the text came from, for the plan's record.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    resolved = []
    for folder in folders:
        try:
            resolved.append(Path(folder).resolve())
        except (OSError, RuntimeError) as exc:
            log.warning("ignoring folder %s: %s", folder, exc)
    from glmtts.batch.checks import _Checker  # it imports this module's types

    checker = _Checker(resolved, engine, engines)
    tasks: list[BatchTask] = []
    invalid: list[InvalidLine] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        entry = checker.check(number, raw.removesuffix(b"\r"))
        if isinstance(entry, BatchTask):
            tasks.append(entry)
        elif entry is not None:
            invalid.append(entry)
    return BatchPlan(source, tuple(resolved), tuple(tasks), tuple(invalid))


def load_tasks(path: str | Path, *, extra_folders: Sequence[Path] = (),
               engine: str = DEFAULT_ENGINE, engines: Mapping[str, Engine] | None = None
               ) -> BatchPlan:
    """Read and check the JSONL file ``path``; reference audio may come from its folder and
    ``extra_folders``.

    Raises:
        BatchInputError: the file is missing, a folder, or unreadable.
    """
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise BatchInputError(Say("{path} is a folder, not a JSONL file",
                                  path=str(path))) from None
    except FileNotFoundError:
        raise BatchInputError(Say("the tasks file {path} does not exist",
                                  path=str(path))) from None
    except OSError as exc:
        raise BatchInputError(Say("cannot read the tasks file {path}: {error}", path=str(path),
                                  error=exc.strerror or str(exc))) from None
    return parse_tasks(data, folders=[path.resolve().parent, *extra_folders], engine=engine,
                       engines=engines, source=path)


__all__ = ["MAX_PROMPT_SECONDS", "MAX_TEXT_CHARS", "BatchInputError", "BatchPlan", "BatchTask",
           "InvalidLine", "check_audio", "is_inside", "load_tasks", "parse_tasks",
           "resolve_inside", "safe_stem"]
