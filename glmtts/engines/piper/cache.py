"""A converted voice, kept so that later loads skip the ONNX file and the ``onnx`` package.

The first load of a Piper voice reads its ONNX file (``onnx`` and its dependencies take about a
second to import, the conversion another) into our own weights; they are saved here as a torch
file, and later loads read only that file, memory-mapped. Entries are keyed by the voice file's
resolved path, size and modification time; each entry also records the file's SHA-256, so that
an entry never serves another file's weights.

Location: ``$GLMTTS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/glmtts`` (``~/.cache/glmtts``),
subfolder ``voices``. Deleting the folder is always safe. ``--no-cache`` (or
``PiperEngine(cache=False)``) bypasses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from glmtts.engines.piper.vits_config import VitsConfig

log = logging.getLogger(__name__)

CACHE_ENV = "GLMTTS_CACHE_DIR"
#: Format of an entry; an entry of another format is converted again. Format 2 holds the
#: weights as the engine runs them (HiFi-GAN's block mean folded in, flow and decoder
#: channels-last), so that a load uses the mapped file as it is, without a copy.
FORMAT = 2


def cache_root() -> Path:
    """The cache folder (see the module doc)."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "glmtts"


def _entry(voice: Path) -> tuple[Path, os.stat_result]:
    st = voice.stat()
    key = hashlib.sha256(f"{voice.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    # The format is in the name: programs of two formats sharing a cache keep an entry each.
    return cache_root() / "voices" / f"{voice.stem}-{key.hexdigest()[:16]}-f{FORMAT}.pt", st


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(voice: Path) -> tuple[VitsConfig, dict[str, torch.Tensor]] | None:
    """The cached weights of ``voice`` (memory-mapped), or None when there are none (or they
    are unreadable, of another format, or of another file)."""
    try:
        entry, st = _entry(voice)
        if not entry.is_file():
            return None
        data: dict[str, Any] = torch.load(entry, mmap=True, weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        log.info("voice cache entry for %s unusable, converting again: %s", voice, exc)
        return None
    if data.get("format") != FORMAT or data.get("size") != st.st_size:
        return None
    config = {name: _tuples(value) for name, value in data["config"].items()}
    return VitsConfig(**config), data["state"]


def _tuples(value: Any) -> Any:
    """Lists (as saved) back to the tuples the config holds."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` as saved: its own layout when dense (channels-last stays so), else contiguous."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    return t.contiguous()


def save(voice: Path, config: VitsConfig, state: dict[str, torch.Tensor]) -> Path | None:
    """Keep ``voice``'s converted weights (written atomically); None when the cache folder is
    not writable (logged, never fatal)."""
    try:
        entry, st = _entry(voice)
        entry.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "size": st.st_size, "sha256": _file_hash(voice),
                   "config": dataclasses.asdict(config),
                   "state": {k: _dense(v) for k, v in state.items()}}
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, entry)
        return entry
    except OSError as exc:
        log.warning("cannot keep the converted voice in %s: %s", cache_root(), exc)
        return None
