"""A converted voice, kept so that later loads skip the ONNX file and the ``onnx`` package.

The first load of a Piper voice reads its ONNX file (``onnx`` and its dependencies take about a
second to import, the conversion another) into our own weights; they are saved here as a torch
file, and later loads read only that file, memory-mapped. Entries are keyed by the voice file's
resolved path, size and modification time; each entry also records the file's SHA-256, so that
an entry never serves another file's weights.

Location: ``$GLMTTS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/glmtts`` (``~/.cache/glmtts``),
subfolder ``voices``. Deleting the folder is always safe. ``--no-cache`` (or
``PiperEngine(cache=False)``) bypasses it.

Beside each torch entry, the NumPy runtime (:mod:`glmtts.engines.piper.vits_numpy`, which
``glmtts synth --cpu`` uses) keeps the same weights as an uncompressed ``.npz`` file, read
without importing torch; it is written from the torch weights the first time it is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glmtts.engines.piper.vits_config import VitsConfig

if TYPE_CHECKING:
    import torch

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


def _entry(voice: Path, suffix: str = ".pt") -> tuple[Path, os.stat_result]:
    st = voice.stat()
    key = hashlib.sha256(f"{voice.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    # The format is in the name: programs of two formats sharing a cache keep an entry each.
    name = f"{voice.stem}-{key.hexdigest()[:16]}-f{FORMAT}{suffix}"
    return cache_root() / "voices" / name, st


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(voice: Path) -> tuple[VitsConfig, dict[str, torch.Tensor]] | None:
    """The cached weights of ``voice`` (memory-mapped), or None when there are none (or they
    are unreadable, of another format, or of another file)."""
    import torch

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
    import torch

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
        import torch

        return _write(entry, lambda fh: torch.save(payload, fh))
    except OSError as exc:
        log.warning("cannot keep the converted voice in %s: %s", cache_root(), exc)
        return None


def _write(entry: Path, write: Any) -> Path:
    """Write ``entry`` atomically: ``write(file)`` into a temporary file, then renamed."""
    fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return entry


def load_arrays(voice: Path) -> tuple[VitsConfig, dict[str, np.ndarray]] | None:
    """The NumPy runtime's weights of ``voice`` (see the module doc), or None when there are
    none or they are unusable."""
    try:
        entry, st = _entry(voice, ".npz")
        if not entry.is_file():
            return None
        with np.load(entry, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            if meta.get("format") != FORMAT or meta.get("size") != st.st_size:
                return None
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
        config = {name: _tuples(value) for name, value in meta["config"].items()}
        return VitsConfig(**config), arrays
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as exc:
        # an empty, cut-off or damaged file included: converted again and replaced
        log.info("NumPy voice cache entry for %s unusable, writing it again: %s", voice, exc)
        return None


def save_arrays(voice: Path, config: VitsConfig, arrays: dict[str, np.ndarray]) -> Path | None:
    """Keep the NumPy runtime's weights of ``voice`` (atomically); None when the cache folder
    is not writable (logged, never fatal)."""
    try:
        entry, st = _entry(voice, ".npz")
        entry.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"format": FORMAT, "size": st.st_size, "sha256": _file_hash(voice),
                           "config": dataclasses.asdict(config)})
        return _write(entry, lambda fh: np.savez(fh, __meta__=np.array(meta), **arrays))
    except OSError as exc:
        log.warning("cannot keep the converted voice in %s: %s", cache_root(), exc)
        return None
