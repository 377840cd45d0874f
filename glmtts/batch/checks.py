"""Checking one batch line (see :mod:`glmtts.batch.tasks`): every field, every problem found
on it with its reason, never an exception."""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glmtts.batch.tasks import (
    FIELD_KNOBS,
    KNOWN_FIELDS,
    BatchTask,
    InvalidLine,
    check_audio,
    resolve_inside,
    safe_stem,
)
from glmtts.engines import create_engine, engine_names
from glmtts.engines.base import Capabilities, Engine
from glmtts.errors import GlmTtsError, InvalidRequestError
from glmtts.request import SynthesisRequest, check_seed, clean_text
from glmtts.say import N_, Say, message_of

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one line
def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Checks lines one by one, remembering uttids and file names already taken."""

    def __init__(self, folders: Sequence[Path], engine: str,
                 engines: Mapping[str, Engine] | None) -> None:
        self.folders = tuple(folders)
        self.default_engine = engine
        self.engines: dict[str, Engine | GlmTtsError] = dict(engines or {})
        self.uttids: dict[str, int] = {}
        self.stems: dict[str, tuple[int, str]] = {}
        self.audio: dict[Path, float | InvalidRequestError] = {}
        self.references: dict[Path, str | None] = {}

    def engine(self, name: str) -> Engine | GlmTtsError:
        if name not in self.engines:
            try:
                self.engines[name] = create_engine(name)
            except GlmTtsError as exc:  # unknown engine, voice or checkout missing
                self.engines[name] = exc
            except (ImportError, OSError) as exc:  # an engine's optional dependency or files
                self.engines[name] = GlmTtsError(Say(
                    "the {engine} engine cannot be created here ({error})", engine=name,
                    error=f"{type(exc).__name__}: {exc}"))
        return self.engines[name]

    def audio_seconds(self, path: Path) -> float | InvalidRequestError:
        if path not in self.audio:
            try:
                self.audio[path] = check_audio(path)
            except InvalidRequestError as exc:
                self.audio[path] = exc
        return self.audio[path]

    def reference_problem(self, path: Path) -> str | None:
        """For engines that clone a voice: the full reference check they apply themselves
        (length 2-30 s, not silent...), done now so that a bad clip fails before any model
        loads. None when the clip is usable."""
        if path not in self.references:
            from glmtts.reference_audio import load_reference

            try:
                load_reference(path)
                self.references[path] = None
            except InvalidRequestError as exc:
                self.references[path] = message_of(exc)
        return self.references[path]

    def check(self, number: int, raw: bytes) -> BatchTask | InvalidLine | None:
        """Check line ``number``; None for a blank line."""
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            return InvalidLine(number, None, (Say("not UTF-8 text ({reason} at byte {at})",
                                                  reason=exc.reason, at=exc.start),))
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            return InvalidLine(number, None, (Say("not JSON ({detail})", detail=detail),))
        if not isinstance(data, dict):
            return InvalidLine(number, None, (Say("not a JSON object (found {found})",
                                                  found=_json_type(data)),))
        return self._check_object(number, data)

    def _check_object(self, number: int, data: dict[str, Any]) -> BatchTask | InvalidLine:
        reasons: list[str] = []
        notes: list[str] = []
        uttid, stem = self._uttid(number, data, reasons, notes)
        engine_name, engine = self._engine(data.get("engine"), reasons)
        caps = engine.capabilities if engine is not None else None
        text = _syn_text(data, reasons, notes)
        sample_rate = _sample_rate(data.get("sample_rate"), caps, engine_name, reasons)
        seed = _seed(data.get("seed"), reasons)
        kv = data.get("use_kv_cache")
        if kv is not None and not isinstance(kv, bool):
            reasons.append(Say("use_kv_cache must be true or false, not {value}",
                               value=_short(kv)))
            kv = None
        prompt_text = data.get("prompt_text")
        if prompt_text is not None and not isinstance(prompt_text, str):
            reasons.append(Say("prompt_text must be a string, not {found}",
                               found=_json_type(prompt_text)))
            prompt_text = None
        prompt_speech = self._prompt_speech(data.get("prompt_speech"), reasons)
        notes.extend(_ignored(data, caps))
        honoured = caps.honours if caps is not None else frozenset()
        if prompt_speech is not None and "reference_audio" in honoured:
            problem = self.reference_problem(prompt_speech)
            if problem is not None:
                reasons.append(Say("prompt_speech {path}: {problem}",
                                   path=_path_text(data["prompt_speech"]), problem=problem))
        if reasons or text is None or engine is None or stem is None:
            return InvalidLine(number, uttid, tuple(reasons))
        clones = "reference_audio" in honoured
        try:
            request = SynthesisRequest(
                text=text,
                sample_rate=sample_rate if "sample_rate" in honoured else None,
                seed=seed if "seed" in honoured else None,
                use_kv_cache=bool(kv) if "use_kv_cache" in honoured else False,
                reference_audio=prompt_speech if clones else None,
                reference_text=prompt_text if clones else None,
            )
            engine.check(request)
        except GlmTtsError as exc:
            return InvalidLine(number, uttid, (message_of(exc),))
        return BatchTask(number, uttid, stem, engine_name, request, prompt_speech, prompt_text,
                         tuple(notes))

    def _engine(self, value: Any, reasons: list[str]) -> tuple[str, Engine | None]:
        if value is None:
            value = self.default_engine
        if not isinstance(value, str) or not value:
            reasons.append(Say("engine must be one of {names}, not {value}",
                               names=", ".join(engine_names()), value=_short(value)))
            return str(value), None
        found = self.engine(value)
        if isinstance(found, GlmTtsError):
            reasons.append(Say("engine: {reason}", reason=message_of(found)))
            return value, None
        return value, found

    def _uttid(self, number: int, data: dict[str, Any], reasons: list[str],
               notes: list[str]) -> tuple[str | None, str | None]:
        raw = data.get("uttid")
        if raw is None:
            uttid = f"line-{number}"
            notes.append(Say("no uttid: named {uttid} after its line number",
                             uttid=repr(uttid)))
        elif _whole(raw):
            uttid = str(raw)
        elif isinstance(raw, str):
            uttid = raw
        else:
            reasons.append(Say("uttid must be a string or a whole number, not {found}",
                               found=_json_type(raw)))
            return None, None
        if not uttid.strip():
            reasons.append(N_("uttid is empty"))
            return uttid, None
        first = self.uttids.setdefault(uttid, number)
        if first != number:
            reasons.append(Say("duplicate uttid {uttid} (first on line {first})",
                               uttid=repr(uttid), first=first))
            return uttid, None
        stem = safe_stem(uttid)
        if stem is None:
            reasons.append(Say("uttid {uttid} has no letter or digit to make a file name from",
                               uttid=repr(uttid)))
            return uttid, None
        taken = self.stems.setdefault(stem.casefold(), (number, uttid))
        if taken[0] != number:
            reasons.append(Say("uttid {uttid} and {other} (line {line}) would both be saved "
                               "as {file}", uttid=repr(uttid), other=repr(taken[1]),
                               line=taken[0], file=f"{stem}.wav"))
            return uttid, None
        if stem != uttid:
            notes.append(Say("uttid {uttid} is saved as {file}", uttid=repr(uttid),
                             file=f"{stem}.wav"))
        return uttid, stem

    def _prompt_speech(self, value: Any, reasons: list[str]) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str):
            reasons.append(Say("prompt_speech must be a path (a string), not {found}",
                               found=_json_type(value)))
            return None
        if not value.strip():
            reasons.append(N_("prompt_speech is empty"))
            return None
        shown = _path_text(value)
        try:
            path = resolve_inside(value, self.folders)
        except InvalidRequestError as exc:
            reasons.append(Say("prompt_speech {path}: {problem}", path=shown,
                               problem=message_of(exc)))
            return None
        seconds = self.audio_seconds(path)
        if isinstance(seconds, InvalidRequestError):
            reasons.append(Say("prompt_speech {path}: {problem}", path=shown,
                               problem=message_of(seconds)))
            return None
        return path


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 40, 40, 4, 4


def _syn_text(data: dict[str, Any], reasons: list[str], notes: list[str]) -> str | None:
    value = data.get("syn_text")
    if value is None:
        reasons.append(N_("missing syn_text (the text to speak)"))
    elif not isinstance(value, str):
        reasons.append(Say("syn_text must be a string, not {found}", found=_json_type(value)))
    else:
        try:
            text, cleaned = clean_text(value)
        except InvalidRequestError as exc:
            reasons.append(Say("syn_text: {problem}", problem=message_of(exc)))
        else:
            notes.extend(cleaned)
            return text
    return None


def _sample_rate(value: Any, caps: Capabilities | None, engine: str,
                 reasons: list[str]) -> int | None:
    if value is None:
        return None
    if not _whole(value) or value <= 0:
        reasons.append(Say("sample_rate must be a positive whole number of Hz, not {value}",
                           value=_short(value)))
        return None
    if caps is not None and value not in caps.sample_rates:
        rates = ", ".join(str(r) for r in caps.sample_rates)
        reasons.append(Say("sample_rate {rate} Hz is not one the {engine} engine can produce "
                           "({rates})", rate=value, engine=engine, rates=rates))
        return None
    return int(value)


def _seed(value: Any, reasons: list[str]) -> int | None:
    try:
        return check_seed(value)
    except InvalidRequestError:
        reasons.append(Say("seed must be a whole number from 0 to 2**63 - 1, not {value}",
                           value=_short(value)))
        return None


def _ignored(data: dict[str, Any], caps: Capabilities | None) -> list[str]:
    """Notes on the fields this line sets that will not be used, and why."""
    notes = []
    unknown = sorted(k for k in data if k not in KNOWN_FIELDS)
    if unknown:
        notes.append(Say("unknown field(s) ignored: {fields}",
                         fields=", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")))
    if caps is not None:
        for name, knob in FIELD_KNOBS.items():
            why = caps.reason(knob)
            if why is not None and data.get(name) is not None:
                notes.append(Say("{field} ignored: {reason}", field=name, reason=why))
    return notes


def _path_text(value: str) -> str:
    """A path as written in the JSONL, quoted, at most about 80 characters."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _short(value: Any) -> str:
    """A short, bounded rendering of a JSON value for a message."""
    return _REPR.repr(value)


def _json_type(value: Any) -> str:
    names = {dict: N_("an object"), list: N_("a list"), str: N_("a string"),
             bool: N_("true/false"), int: N_("a number"), float: N_("a number"),
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


