"""Where batch files live when they come through the app: uploads, server paths, run folders.

- :func:`batch_root`: the app's batch folder (``$GLMTTS_BATCH_DIR``, else ``data/batch`` at the
  project root, git-ignored): ``uploads/<digest>/`` holds uploaded tasks and reference audio,
  ``runs/<name>-<digest>/`` the results. The same uploads give the same folders, so running them
  again resumes instead of starting over.
- :func:`server_path`: a JSONL named by path must lie inside the folders the server allows
  (``$GLMTTS_BATCH_INPUTS``, ``os.pathsep``-separated, else the working directory), symlinks
  resolved, like reference audio inside its JSONL's folder.
- :func:`extract_zip`: zip members with absolute names, ``..`` or symlinks are refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from glmtts.batch.tasks import BatchInputError, is_inside, safe_stem

log = logging.getLogger(__name__)

BATCH_DIR_ENV = "GLMTTS_BATCH_DIR"
INPUTS_ENV = "GLMTTS_BATCH_INPUTS"
#: Largest total size a zip may unpack to, and most members it may have.
MAX_UNZIPPED_BYTES = 2 * 2**30
MAX_ZIP_MEMBERS = 20_000
UPLOADED_MARKER = ".uploaded.json"


def batch_root() -> Path:
    """``$GLMTTS_BATCH_DIR`` if set, else ``<project root>/data/batch``."""
    configured = os.environ.get(BATCH_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "batch"


def server_folders() -> tuple[Path, ...]:
    """Folders a JSONL named by path may come from (resolved)."""
    configured = os.environ.get(INPUTS_ENV)
    names = [n for n in configured.split(os.pathsep) if n.strip()] if configured else []
    return tuple(Path(n).expanduser().resolve() for n in names) or (Path.cwd().resolve(),)


def server_path(value: str, folders: Sequence[Path] | None = None) -> Path:
    """The JSONL file ``value`` names, resolved, if it lies inside ``folders`` (default:
    :func:`server_folders`). Relative paths are taken from the first folder.

    Raises:
        BatchInputError: empty, outside the folders (symlinks resolved), missing or a folder.
    """
    folders = tuple(folders) if folders is not None else server_folders()
    value = value.strip()
    if not value:
        raise BatchInputError("give the path of a JSONL file")
    if "\x00" in value:
        raise BatchInputError("the path contains a NUL character")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = folders[0] / path
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise BatchInputError(f"{value} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise BatchInputError(f"{value} cannot be resolved: {exc}") from None
    if not is_inside(resolved, folders):
        allowed = ", ".join(str(f) for f in folders)
        raise BatchInputError(f"{value} is outside the folders this server reads tasks from "
                              f"({allowed}; set {INPUTS_ENV} to change them)")
    if not resolved.is_file():
        raise BatchInputError(f"{value} is not a file")
    return resolved


def digest(parts: Iterable[bytes]) -> str:
    """A short content digest (names the upload and run folders)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:12]


def run_folder(name: str, key: str) -> Path:
    """The results folder of the tasks file ``name`` whose content or path digest is ``key``."""
    stem = safe_stem(Path(name).stem) or "tasks"
    return batch_root() / "runs" / f"{stem[:40]}-{key}"


def _member_path(name: str) -> PurePosixPath | None:
    """A zip member's relative path, or None when it must be refused."""
    if "\x00" in name or name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return None
    rel = PurePosixPath(name.replace("\\", "/"))
    if ".." in rel.parts or not rel.parts:
        return None
    return rel


def extract_zip(data: bytes, dest: Path) -> list[str]:
    """Unpack the zip ``data`` into ``dest``, keeping its folders; return one sentence per
    member refused (absolute name, ``..``, symlink) or problem (not a zip, too big)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        return [f"not a zip file ({exc})"]
    problems: list[str] = []
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            return [f"the zip has {len(members):,} members; the limit is {MAX_ZIP_MEMBERS:,}"]
        if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
            return [f"the zip unpacks to more than {MAX_UNZIPPED_BYTES / 2**30:.0f} GiB"]
        root = dest.resolve()
        budget = MAX_UNZIPPED_BYTES
        for member in members:
            if member.is_dir():
                continue
            rel = _member_path(member.filename)
            if rel is None:
                problems.append(f"{member.filename!r}: refused (absolute path or '..')")
                continue
            if stat.S_ISLNK(member.external_attr >> 16):
                problems.append(f"{member.filename!r}: refused (a symbolic link)")
                continue
            target = root / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if not is_inside(target.parent.resolve(), [root]):
                    problems.append(f"{member.filename!r}: refused (leads outside)")
                    continue
                with zf.open(member) as src, open(target, "wb") as out:
                    while chunk := src.read(2**20):
                        budget -= len(chunk)
                        if budget < 0:  # sizes in the zip's directory can lie
                            raise ValueError("the zip unpacks to more than it declares")
                        out.write(chunk)
            except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
                problems.append(f"{member.filename!r}: cannot be unpacked ({exc})")
    return problems


def save_upload(name: str, data: bytes, dest: Path) -> list[str]:
    """Save one uploaded file into ``dest`` (a zip is unpacked there); return problems."""
    if name.lower().endswith(".zip"):
        return extract_zip(data, dest)
    base = PurePosixPath(name.replace("\\", "/")).name
    if not base or base.startswith(".") or "\x00" in base:
        return [f"{name!r}: refused (not a plain file name)"]
    try:
        (dest / base).write_bytes(data)
    except OSError as exc:
        return [f"{name!r}: cannot be saved ({exc.strerror or exc})"]
    return []


def _read_marker(marker: Path) -> list[str] | None:
    """The problems recorded when these uploads were saved, or None when not saved yet."""
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): saving the uploads again", marker, exc)
        return None
    return [str(p) for p in recorded] if isinstance(recorded, list) else None


def save_uploads(files: Iterable[tuple[str, bytes]], dest: Path) -> list[str]:
    """Save uploaded files (name, content) into ``dest`` (created); return every problem.

    ``dest`` is meant to be named by the content's :func:`digest`: once saved (a marker file
    records it, with the problems found), later calls return at once, so a page rerun does not
    unpack the same zip again.
    """
    marker = dest / UPLOADED_MARKER
    recorded = _read_marker(marker)
    if recorded is not None:
        return recorded
    dest.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for name, data in files:
        problems.extend(save_upload(name, data, dest))
    marker.write_text(json.dumps(problems), encoding="utf-8")
    return problems
