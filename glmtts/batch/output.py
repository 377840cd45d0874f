"""The output folder of a batch: WAVs written atomically, the append-only manifest, the lock.

Crash safety, step by step, for each finished line:

1. the WAV is written to a temporary file in the output folder (``.STEM.*.wav.tmp``), flushed
   and fsynced, then renamed over ``STEM.wav`` (``os.replace`` is atomic), and the folder is
   fsynced so that the rename itself is durable;
2. one JSON line is appended to ``manifest.jsonl`` in a single write, flushed and fsynced.

A kill at any point leaves either no WAV, an old WAV, or the new one; never half a file. A kill
during step 2 can leave a torn last manifest line: readers skip it and :meth:`Manifest.open`
cuts it off before appending, so that line simply runs again.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import uuid
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from glmtts.audio import wav_bytes
from glmtts.batch.tasks import BatchInputError
from glmtts.errors import GlmTtsError
from glmtts.say import Say

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".batch.lock"
TMP_SUFFIX = ".wav.tmp"


class BatchOutputError(GlmTtsError):
    """The manifest cannot be written any more (disk full, folder removed): the batch stops,
    since nothing more could be recorded."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on folders; rename stays atomic
        log.debug("fsync of folder %s: %s", folder, exc)
    finally:
        os.close(fd)


def write_wav_atomic(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write ``audio`` as 16-bit PCM WAV (as :func:`glmtts.audio.write_wav` does) so that
    ``path`` is either absent, its old content, or the whole new file: temporary file in the
    same folder, fsync, ``os.replace``, fsync of the folder.

    Raises:
        OSError: the folder is not writable, the disk is full...
    """
    path = Path(path)
    data = wav_bytes(audio, sample_rate)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def clean_temp_files(folder: Path) -> list[str]:
    """Remove leftover temporary WAVs (``.*.wav.tmp``) of an interrupted run; return their
    names. Call only while holding the folder's :class:`OutputLock`."""
    removed = []
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX) and entry.is_file():
            entry.unlink()
            removed.append(entry.name)
    return removed


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Every complete entry of a manifest, in order; a torn last line (no newline) and lines
    that are not JSON objects are skipped (and logged). A missing file reads as empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines[-1]:
        log.warning("%s: ignoring a torn last line (%d bytes)", path, len(lines[-1]))
    entries = []
    for number, raw in enumerate(lines[:-1], start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        elif raw.strip():
            log.warning("%s line %d: not a manifest entry, ignored", path, number)
    return entries


def latest_entries(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last entry of each uttid among lines that ran (``ok`` or ``failed``); ``skipped``
    entries are left out (a skipped duplicate must not hide the line that ran)."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in entries:
        uttid = entry.get("uttid")
        if isinstance(uttid, str) and entry.get("status") in ("ok", "failed"):
            latest[uttid] = entry
    return latest


class Manifest:
    """The append-only ``manifest.jsonl`` of an output folder, one entry per finished line."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST_NAME
        self._fh: io.BufferedWriter | None = None

    def exists(self) -> bool:
        """Whether the manifest holds anything."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def open(self) -> int:
        """Open for appending, first cutting off a torn last line; return the bytes cut."""
        cut = 0
        if self.path.exists():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            cut = len(data) - keep
            if cut:
                log.warning("%s: cutting off a torn last line (%d bytes)", self.path, cut)
                os.truncate(self.path, keep)
        self._fh = open(self.path, "ab")  # noqa: SIM115 (held open for the whole run)
        return cut

    def append(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` as one line, in one write, flushed and fsynced."""
        if self._fh is None:
            raise RuntimeError("Manifest.append before open()")
        try:
            data = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        except UnicodeEncodeError:  # lone surrogates (JSON allows them as escapes): keep them
            data = (json.dumps(entry) + "\n").encode()
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise BatchOutputError(Say("cannot write {path}: {error}", path=str(self.path),
                                       error=exc.strerror or str(exc))) from exc

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class OutputLock:
    """An exclusive, non-blocking lock on an output folder (``.batch.lock``, ``flock``), so two
    runs (two browser tabs, two shells) never write the same folder. The kernel releases it when
    the process dies, even by ``kill -9``. Where ``fcntl`` is missing, locking is skipped."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises:
            BatchInputError: another run holds the folder, or the lock file cannot be made.
        """
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise BatchInputError(Say("cannot write to the output folder {folder}: {error}",
                                      folder=str(self.path.parent),
                                      error=exc.strerror or str(exc))) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BatchInputError(Say("another batch is running in {folder}; wait for it to "
                                      "finish or choose another output folder",
                                      folder=str(self.path.parent))) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def prepare_folder(folder: str | Path) -> Path:
    """Create the output folder (and parents) if needed; return it resolved.

    Raises:
        BatchInputError: it cannot be created, or is not a folder.
    """
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BatchInputError(Say("the output path {path} exists and is not a folder",
                                  path=str(path))) from None
    except OSError as exc:
        raise BatchInputError(Say("cannot create the output folder {path}: {error}",
                                  path=str(path), error=exc.strerror or str(exc))) from None
    if not path.is_dir():
        raise BatchInputError(Say("the output path {path} exists and is not a folder",
                                  path=str(path)))
    return path.resolve()


def zip_results(folder: str | Path) -> bytes:
    """A zip of the output folder's results: ``manifest.jsonl`` and the WAV of the latest
    ``ok`` entry of each uttid (WAVs stored as they are, the manifest deflated)."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if manifest.is_file():
            zf.write(manifest, MANIFEST_NAME, compress_type=zipfile.ZIP_DEFLATED)
        for entry in latest_entries(read_manifest(manifest)).values():
            wav = entry.get("wav")
            if (entry.get("status") != "ok" or not isinstance(wav, str)
                    or Path(wav).name != wav or "\\" in wav or wav.startswith(".")):
                continue
            if (folder / wav).is_file():
                zf.write(folder / wav, wav, compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()
