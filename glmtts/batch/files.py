"""Where batch files live when they come through the app: uploads, server paths, run folders.

- :func:`batch_root`: the app's batch folder (``$GLMTTS_BATCH_DIR``, else ``data/batch`` at the
  project root, git-ignored). ``uploads/<space>/<digest>/`` holds one browser session's uploaded
  tasks and reference audio: ``<space>`` is a random name (:func:`new_space`) that only that
  session knows, and no server path can reach it. ``runs/[<space>/]<name>-<digest>/`` holds the
  results. The same uploads give the same folders within a session, so running them again
  resumes instead of starting over. :func:`remove_old_uploads` removes upload spaces unused
  for a day (``$GLMTTS_BATCH_UPLOAD_TTL_H``).
- :func:`server_path`: a JSONL named by path must lie inside the folders the server allows
  (``$GLMTTS_BATCH_ROOT``, ``os.pathsep``-separated, else ``data/tasks`` at the project root),
  symlinks resolved, like reference audio inside its JSONL's folder. A path outside, missing
  or not a file gets one and the same answer: the page tells nothing about files elsewhere.
- :func:`extract_zip`: zip members with absolute names, ``..`` or symlinks are refused; what an
  upload and a session may unpack is capped (:class:`UploadBudget`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import stat
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from glmtts.batch.tasks import BatchInputError, is_inside, safe_stem
from glmtts.say import N_, Say, message_of

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BATCH_DIR_ENV = "GLMTTS_BATCH_DIR"
INPUTS_ENV = "GLMTTS_BATCH_ROOT"
UPLOAD_TTL_ENV = "GLMTTS_BATCH_UPLOAD_TTL_H"
#: What one upload (all its files, zips unpacked) may add, in bytes and files.
MAX_UPLOAD_BYTES = 256 * 2**20
MAX_UPLOAD_FILES = 2_000
#: What one browser session's uploads may hold in all.
MAX_SPACE_BYTES = 1 * 2**30
MAX_SPACE_FILES = 10_000
UPLOADED_MARKER = ".uploaded.json"


def batch_root() -> Path:
    """``$GLMTTS_BATCH_DIR`` if set, else ``<project root>/data/batch``."""
    configured = os.environ.get(BATCH_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return PROJECT_ROOT / "data" / "batch"


def server_folders() -> tuple[Path, ...]:
    """Folders a JSONL named by path may come from (resolved): ``$GLMTTS_BATCH_ROOT``, else
    ``<project root>/data/tasks``."""
    configured = os.environ.get(INPUTS_ENV)
    names = [n for n in configured.split(os.pathsep) if n.strip()] if configured else []
    return tuple(Path(n).expanduser().resolve() for n in names) or (
        (PROJECT_ROOT / "data" / "tasks").resolve(),)


def server_path(value: str, folders: Sequence[Path] | None = None) -> Path:
    """The JSONL file ``value`` names, resolved, if it lies inside ``folders`` (default:
    :func:`server_folders`) and is a file. Relative paths are taken from the first folder.

    Raises:
        BatchInputError: empty or NUL; otherwise one message for outside (symlinks resolved),
            missing, unresolvable and not a file alike.
    """
    folders = tuple(folders) if folders is not None else server_folders()
    value = value.strip()
    if not value:
        raise BatchInputError(N_("give the path of a JSONL file"))
    if "\x00" in value:
        raise BatchInputError(N_("the path contains a NUL character"))
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = folders[0] / path
    try:
        resolved = path.resolve(strict=True)
        usable = is_inside(resolved, folders) and resolved.is_file()
    except (OSError, RuntimeError):
        usable = False
    if not usable:
        allowed = ", ".join(str(f) for f in folders)
        raise BatchInputError(Say("no JSONL file {path} in the folders this server reads tasks "
                                  "from ({allowed}; set {variable} to change them)",
                                  path=value, allowed=allowed, variable=INPUTS_ENV))
    return resolved


def new_space() -> str:
    """A fresh, unguessable name for one browser session's uploads (128 random bits)."""
    return secrets.token_hex(16)


def space_folder(space: str) -> Path:
    """The uploads folder of the session space ``space`` (a name from :func:`new_space`)."""
    if len(space) != 32 or not all(c in "0123456789abcdef" for c in space):
        raise ValueError(f"not an upload space name: {space!r}")
    return batch_root() / "uploads" / space


def folder_usage(folder: Path) -> tuple[int, int]:
    """Bytes and files under ``folder`` (0, 0 when it does not exist)."""
    size = files = 0
    for path in folder.rglob("*") if folder.is_dir() else ():
        if path.is_file() and not path.is_symlink():
            size += path.stat().st_size
            files += 1
    return size, files


def remove_old_uploads(max_age_s: float | None = None, now: float | None = None) -> list[Path]:
    """Remove upload spaces whose newest file is older than ``max_age_s`` (default
    ``$GLMTTS_BATCH_UPLOAD_TTL_H`` hours, else 24 h; 0 or less keeps everything); return them.
    Results under ``runs/`` are kept."""
    if max_age_s is None:
        try:
            max_age_s = float(os.environ.get(UPLOAD_TTL_ENV, "24")) * 3600
        except ValueError:
            log.warning("%s is not a number of hours: keeping uploads", UPLOAD_TTL_ENV)
            return []
    if max_age_s <= 0:
        return []
    now = time.time() if now is None else now
    removed = []
    uploads = batch_root() / "uploads"
    for space in sorted(uploads.iterdir()) if uploads.is_dir() else ():
        try:
            newest = max([p.stat().st_mtime for p in space.rglob("*")] +
                         [space.stat().st_mtime])
            if now - newest > max_age_s:
                shutil.rmtree(space) if space.is_dir() else space.unlink()
                removed.append(space)
        except OSError as exc:
            log.warning("cannot remove old uploads %s: %s", space, exc)
    return removed


def digest(parts: Iterable[bytes]) -> str:
    """A short content digest (names the upload and run folders)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:12]


def run_folder(name: str, key: str, space: str | None = None) -> Path:
    """The results folder of the tasks file ``name`` whose content or path digest is ``key``
    (inside the session's ``space`` when its uploads are involved)."""
    stem = safe_stem(Path(name).stem) or "tasks"
    runs = batch_root() / "runs"
    return (runs / space if space else runs) / f"{stem[:40]}-{key}"


@dataclass
class UploadBudget:
    """What an upload may still write: bytes and files (zips unpacked)."""

    bytes_left: int = MAX_UPLOAD_BYTES
    files_left: int = MAX_UPLOAD_FILES
    why: str = "one upload"

    @classmethod
    def for_space(cls, folder: Path) -> UploadBudget:
        """The smaller of one upload's caps and what the session space ``folder`` (the parent
        of the upload's folder) has left."""
        size, files = folder_usage(folder)
        space_bytes, space_files = MAX_SPACE_BYTES - size, MAX_SPACE_FILES - files
        if space_bytes < MAX_UPLOAD_BYTES or space_files < MAX_UPLOAD_FILES:
            return cls(max(space_bytes, 0), max(space_files, 0), N_("this session's uploads"))
        return cls()

    def take(self, size: int) -> str | None:
        """Count one file of ``size`` bytes; the problem when it does not fit, else None."""
        if self.files_left < 1:
            return Say("more files than {what} may hold", what=self.why)
        if size > self.bytes_left:
            return Say("more bytes than {what} may hold ({left} left)", what=self.why,
                       left=f"{self.bytes_left:,}")
        self.files_left -= 1
        self.bytes_left -= size
        return None

    def limits(self) -> str:
        return Say("limits: {upload_mib} MiB and {upload_files} files per upload, {space_mib} "
                   "MiB and {space_files} files per session, zips unpacked",
                   upload_mib=MAX_UPLOAD_BYTES // 2**20, upload_files=f"{MAX_UPLOAD_FILES:,}",
                   space_mib=MAX_SPACE_BYTES // 2**20, space_files=f"{MAX_SPACE_FILES:,}")


def _member_path(name: str) -> PurePosixPath | None:
    """A zip member's relative path, or None when it must be refused."""
    if "\x00" in name or name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return None
    rel = PurePosixPath(name.replace("\\", "/"))
    if ".." in rel.parts or not rel.parts:
        return None
    return rel


def extract_zip(data: bytes, dest: Path, budget: UploadBudget | None = None) -> list[str]:
    """Unpack the zip ``data`` into ``dest``, keeping its folders; return one sentence per
    member refused (absolute name, ``..``, symlink) or problem (not a zip, over the budget:
    nothing more is unpacked then, and what the zip's directory declares is checked first)."""
    budget = budget if budget is not None else UploadBudget()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        return [Say("not a zip file ({error})", error=str(exc))]
    problems: list[str] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        declared = sum(m.file_size for m in members)
        if len(members) > budget.files_left or declared > budget.bytes_left:
            return [Say("the zip holds {files} files, {size} bytes unpacked: more than {what} "
                        "may hold ({limits}); nothing was unpacked", files=f"{len(members):,}",
                        size=f"{declared:,}", what=budget.why, limits=budget.limits())]
        root = dest.resolve()
        for member in members:
            rel = _member_path(member.filename)
            if rel is None:
                problems.append(Say("{name}: refused (absolute path or '..')",
                                    name=repr(member.filename)))
                continue
            if stat.S_ISLNK(member.external_attr >> 16):
                problems.append(Say("{name}: refused (a symbolic link)",
                                    name=repr(member.filename)))
                continue
            target = root / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if not is_inside(target.parent.resolve(), [root]):
                    problems.append(Say("{name}: refused (leads outside)",
                                        name=repr(member.filename)))
                    continue
                budget.files_left -= 1
                with zf.open(member) as src, open(target, "wb") as out:
                    while chunk := src.read(2**20):
                        budget.bytes_left -= len(chunk)
                        if budget.bytes_left < 0:  # sizes in the zip's directory can lie
                            raise ValueError(N_("the zip unpacks to more than it declares"))
                        out.write(chunk)
            except ValueError as exc:
                target.unlink(missing_ok=True)
                problems.append(Say("{name}: {error}; unpacking stopped",
                                    name=repr(member.filename), error=message_of(exc)))
                break
            except (OSError, zipfile.BadZipFile, RuntimeError) as exc:
                target.unlink(missing_ok=True)  # no partial file stays
                problems.append(Say("{name}: cannot be unpacked ({error})",
                                    name=repr(member.filename), error=str(exc)))
    return problems


def save_upload(name: str, data: bytes, dest: Path,
                budget: UploadBudget | None = None) -> list[str]:
    """Save one uploaded file into ``dest`` (a zip is unpacked there); return problems."""
    budget = budget if budget is not None else UploadBudget()
    if name.lower().endswith(".zip"):
        return extract_zip(data, dest, budget)
    base = PurePosixPath(name.replace("\\", "/")).name
    if not base or base.startswith(".") or "\x00" in base:
        return [Say("{name}: refused (not a plain file name)", name=repr(name))]
    if (problem := budget.take(len(data))) is not None:
        return [Say("{name}: refused ({problem}; {limits})", name=repr(name), problem=problem,
                    limits=budget.limits())]
    try:
        (dest / base).write_bytes(data)
    except OSError as exc:
        return [Say("{name}: cannot be saved ({error})", name=repr(name),
                    error=exc.strerror or str(exc))]
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


def save_uploads(files: Iterable[tuple[str, bytes]], dest: Path,
                 budget: UploadBudget | None = None) -> list[str]:
    """Save uploaded files (name, content) into ``dest`` (created); return every problem.

    ``dest`` is meant to be named by the content's :func:`digest` inside a session space:
    once saved (a marker file records it, with the problems found), later calls return at
    once, so a page rerun does not unpack the same zip again. ``budget`` defaults to
    :meth:`UploadBudget.for_space` of ``dest``'s parent folder.
    """
    marker = dest / UPLOADED_MARKER
    recorded = _read_marker(marker)
    if recorded is not None:
        return recorded
    budget = budget if budget is not None else UploadBudget.for_space(dest.parent)
    dest.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for name, data in files:
        problems.extend(save_upload(name, data, dest, budget))
    marker.write_text(json.dumps(problems), encoding="utf-8")
    return problems
