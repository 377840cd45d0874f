"""espeak-ng phonemes exactly as Piper voices were trained on them, and their ids.

espeak-ng is reached through the ``espeakbridge`` extension that ships with the ``piper-tts``
package (espeak-ng and its data bundled, GPL-3.0; used as a library, not copied). espeak-ng keeps
global state, so every call goes through one process-wide lock.

Conventions a Piper voice expects (facts of its training data):
- one list of phonemes per sentence; a clause ends with its punctuation, and ``, : ;`` are
  followed by a space;
- language-switch flags such as ``(fr)`` are removed;
- phonemes are split into Unicode code points after NFD decomposition (accents separate);
- ids: ``^`` (begin), then every phoneme followed by the pad ``_``, then ``$`` (end).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from glmtts.errors import VoiceError

_LANG_FLAG = re.compile(r"\([^)]*\)")
_CLAUSE_PUNCT_WITH_SPACE = (",", ":", ";")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {"bridge": None, "voice": None}

BOS, EOS, PAD = "^", "$", "_"


@dataclass(frozen=True)
class Sentence:
    """One sentence: its phonemes, their ids, and the punctuation that ended it."""

    phonemes: tuple[str, ...]
    ids: tuple[int, ...]
    terminator: str
    unknown: tuple[str, ...] = ()


def _bridge():
    """Import and initialise espeak-ng once; raise :class:`VoiceError` when it is missing.

    The extension is loaded from the ``piper`` package's folder without running the package's
    ``__init__``, which would import onnxruntime (about 0.1 s and 15 MB that we never use).
    """
    if _STATE["bridge"] is None:
        import importlib.util
        import sys
        from importlib.machinery import EXTENSION_SUFFIXES
        from pathlib import Path

        spec = importlib.util.find_spec("piper")
        folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
        found = [f / f"espeakbridge{sfx}" for f in folders for sfx in EXTENSION_SUFFIXES
                 if (f / f"espeakbridge{sfx}").is_file()]
        if not found:
            raise VoiceError("espeak-ng is not available: install the 'piper-tts' package "
                             "(pip install -r requirements.txt)")
        bridge = sys.modules.get("piper.espeakbridge")
        if bridge is None:
            ext = importlib.util.spec_from_file_location("piper.espeakbridge", found[0])
            assert ext is not None and ext.loader is not None
            bridge = importlib.util.module_from_spec(ext)
            ext.loader.exec_module(bridge)
            if "piper" not in sys.modules:  # a later `import piper.espeakbridge` makes its own
                sys.modules.pop("piper.espeakbridge", None)  # module (same library and state)
        bridge.initialize(str(found[0].parent / "espeak-ng-data"))
        _STATE["bridge"] = bridge
    return _STATE["bridge"]


def phonemize(text: str, voice: str) -> list[tuple[list[str], str]]:
    """Return ``(phonemes, terminator)`` per sentence of ``text`` for espeak-ng voice ``voice``.

    Raises:
        VoiceError: espeak-ng is missing or does not know ``voice``.
    """
    with _LOCK:
        bridge = _bridge()
        if _STATE["voice"] != voice:
            try:
                bridge.set_voice(voice)
            except RuntimeError as exc:
                raise VoiceError(f"espeak-ng has no voice {voice!r}") from exc
            _STATE["voice"] = voice
        clauses = bridge.get_phonemes(text)
    sentences: list[tuple[list[str], str]] = []
    current: list[str] = []
    for phonemes, terminator, end_of_sentence in clauses:
        chunk = _LANG_FLAG.sub("", phonemes) + terminator
        if terminator in _CLAUSE_PUNCT_WITH_SPACE:
            chunk += " "
        current.extend(unicodedata.normalize("NFD", chunk))
        if end_of_sentence:
            sentences.append((current, terminator))
            current = []
    if current:
        sentences.append((current, ""))
    return [(p, t) for p, t in sentences if p]


def to_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]
           ) -> tuple[list[int], list[str]]:
    """Map phonemes to ids with Piper's framing; return ids and the phonemes the map lacks."""
    ids: list[int] = [*id_map[BOS], *id_map[PAD]]
    unknown: list[str] = []
    for ph in phonemes:
        found = id_map.get(ph)
        if found is None:
            unknown.append(ph)
            continue
        ids.extend(found)
        ids.extend(id_map[PAD])
    ids.extend(id_map[EOS])
    return ids, unknown


def sentences(text: str, voice: str, id_map: Mapping[str, Sequence[int]]) -> list[Sentence]:
    """Phonemize ``text`` and map each sentence to ids (sentences with no phoneme dropped)."""
    out = []
    for phonemes, terminator in phonemize(text, voice):
        ids, unknown = to_ids(phonemes, id_map)
        if len(ids) > 3:
            out.append(Sentence(tuple(phonemes), tuple(ids), terminator, tuple(unknown)))
    return out
