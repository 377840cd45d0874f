"""Voices registered over HTTP: a reference clip and its transcript under a name, kept on disk
so that a restarted service still has them.

Every clip passes the one reference-audio gate (:func:`glmtts.reference_audio.check_header`:
format, size, channels, rate and duration from the header) before it is kept; nothing is
decoded here. Layout: ``<folder>/<name>/voice.json`` plus ``<folder>/<name>/reference.<ext>``;
a voice is written in a temporary folder and renamed into place, so a crash never leaves half
of one.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from glmtts.errors import GlmTtsError
from glmtts.reference_audio import ReferenceAudioError, check_header

#: Voices a service keeps; registering one more removes the oldest.
MAX_VOICES = 100
#: A voice name: a letter or digit, then letters, digits, ``.``, ``_`` or ``-`` (64 at most).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}


class VoiceRegistryError(GlmTtsError):
    """A voice cannot be registered, found or deleted (``status``: the HTTP answer)."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.code = code


def gate_reference(data: bytes, folder: Path, stem: str = "reference") -> tuple[Path, Any]:
    """Write ``data`` as ``folder/stem.<ext>`` and pass it through the reference-audio gate;
    return its path (suffix from the format found) and soundfile's header info.

    Raises:
        ReferenceAudioError: empty, not audio, another format, broken header, too long.
    """
    if not data:
        raise ReferenceAudioError("the reference audio is empty")
    path = folder / f"{stem}.audio"
    path.write_bytes(data)
    info = check_header(path)
    suffix = _SUFFIX.get(info.format)
    return (path.rename(path.with_suffix(suffix)) if suffix else path), info


@dataclass(frozen=True)
class Voice:
    """A registered voice."""

    name: str
    text: str
    audio_file: str
    format: str
    sample_rate: int
    channels: int
    duration_s: float
    bytes: int
    created_at: int
    #: Voices removed to make room for this one (only on registration; not stored).
    evicted: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        """The voice as the API lists it."""
        return {"id": self.name, "object": "voice", "name": self.name, "text": self.text,
                "format": self.format, "sample_rate": self.sample_rate,
                "channels": self.channels, "duration_s": self.duration_s,
                "bytes": self.bytes, "created_at": self.created_at}


class VoiceStore:
    """Registered voices in ``folder`` (created on the first registration).

    Args:
        folder: Where the voices live.
        reserved: Names that cannot be registered (the built-in voice names).
        max_text_chars: Longest transcript accepted.
        max_voices: Voices kept at most: registering one more removes the oldest (by
            registration time) first, and :attr:`evicted` says which.
    """

    def __init__(self, folder: Path, *, reserved: frozenset[str] = frozenset(),
                 max_text_chars: int = 5000, max_voices: int = MAX_VOICES) -> None:
        self.folder = Path(folder)
        self.reserved = frozenset(n.lower() for n in reserved)
        self.max_text_chars = max_text_chars
        self.max_voices = max(1, int(max_voices))
        self._lock = threading.Lock()

    def _check_name(self, name: object) -> str:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise VoiceRegistryError("a voice name is 1-64 letters, digits, '.', '_' or '-', "
                                     f"starting with a letter or digit, not {name!r}",
                                     field="name")
        return name

    def register(self, name: str, text: str, audio: bytes) -> Voice:
        """Keep ``audio`` (after the gate) and ``text`` as the voice ``name``; with
        :attr:`max_voices` voices already kept, the oldest go first (``voice.evicted``).

        Raises:
            VoiceRegistryError: a bad or reserved name, a name already taken (409), an empty or too
                long transcript, or audio the gate refuses.
        """
        name = self._check_name(name)
        if name.lower() in self.reserved:
            raise VoiceRegistryError(f"{name!r} is a built-in voice name; choose another "
                                     "name", field="name")
        if not isinstance(text, str) or not text.strip():
            raise VoiceRegistryError("the transcript of the clip ('text') is required",
                                     field="text")
        if len(text) > self.max_text_chars:
            raise VoiceRegistryError(f"the transcript has {len(text):,} characters; the limit "
                                     f"is {self.max_text_chars:,}", field="text")
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".new-", dir=self.folder,
                                         ignore_cleanup_errors=True) as tmp:
            try:
                path, info = gate_reference(audio, Path(tmp))
            except ReferenceAudioError as exc:
                raise VoiceRegistryError(f"the clip cannot be used: {exc}", field="audio") from None
            voice = Voice(name=name, text=text.strip(), audio_file=path.name,
                          format=str(info.format), sample_rate=int(info.samplerate),
                          channels=int(info.channels),
                          duration_s=round(info.frames / info.samplerate, 3),
                          bytes=len(audio), created_at=int(time.time()))
            (Path(tmp) / "voice.json").write_text(json.dumps(
                {k: v for k, v in asdict(voice).items() if k != "evicted"}), encoding="utf-8")
            with self._lock:
                if self._find(name) is not None:
                    raise VoiceRegistryError(f"a voice called {name!r} exists; delete it "
                                             "first", status=409, field="name",
                                             code="voice_exists")
                kept = sorted(self.list(), key=lambda v: (
                    v.created_at, (self.folder / v.name).stat().st_mtime_ns, v.name))
                evicted = kept[:max(0, len(kept) - self.max_voices + 1)]
                for old in evicted:
                    shutil.rmtree(self.folder / old.name)
                Path(tmp).rename(self.folder / name)
        return replace(voice, evicted=tuple(v.name for v in evicted))

    def _find(self, name: str) -> Voice | None:
        """The voice ``name`` (names compare case-insensitively), or None."""
        if not NAME_PATTERN.fullmatch(name) or not self.folder.is_dir():
            return None
        for entry in self.folder.iterdir():
            if entry.name.lower() == name.lower() and not entry.name.startswith("."):
                return self._read(entry)
        return None

    def _read(self, entry: Path) -> Voice | None:
        try:
            data = json.loads((entry / "voice.json").read_text(encoding="utf-8"))
            return Voice(**data)
        except (OSError, ValueError, TypeError):
            return None  # not a voice of ours (or a damaged one): never served

    def get(self, name: str) -> Voice | None:
        """The voice called ``name``, or None."""
        return self._find(name)

    def audio_path(self, voice: Voice) -> Path:
        """The stored clip of ``voice``."""
        return self.folder / voice.name / voice.audio_file

    def list(self) -> list[Voice]:
        """Every registered voice, by name."""
        if not self.folder.is_dir():
            return []
        found = (self._read(e) for e in sorted(self.folder.iterdir())
                 if e.is_dir() and not e.name.startswith("."))
        return [v for v in found if v is not None]

    def delete(self, name: str) -> Voice:
        """Remove the voice ``name``.

        Raises:
            VoiceRegistryError: 404, no such voice.
        """
        with self._lock:
            voice = self._find(name)
            if voice is None:
                raise VoiceRegistryError(f"no voice called {name!r}", status=404,
                                         field="voice", code="voice_not_found")
            shutil.rmtree(self.folder / voice.name)
        return voice


__all__ = ["NAME_PATTERN", "Voice", "VoiceRegistryError", "VoiceStore",
           "gate_reference"]
