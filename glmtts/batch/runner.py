"""Running a checked batch: every line through the synthesis session, each result durable as
soon as it ends, nothing able to stop the lines after it.

Use it as a context manager (it holds the output folder's lock) and iterate it; each line's
:class:`LineResult` comes out as it finishes, and :attr:`BatchRunner.progress` says where the
batch stands (counts, elapsed time, estimated time left)::

    with BatchRunner(plan, "out", session, resume=True) as runner:
        for result in runner:
            print(result.status, result.uttid, runner.progress.eta_s)

or in one call with a callback: ``run_batch(plan, "out", session, on_line=print)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from glmtts.batch.output import (
    Manifest,
    OutputLock,
    clean_temp_files,
    latest_entries,
    prepare_folder,
    read_manifest,
    write_wav_atomic,
)
from glmtts.batch.tasks import BatchInputError, BatchPlan, BatchTask, InvalidLine
from glmtts.errors import GlmTtsError, OutOfMemoryError
from glmtts.outcome import SynthesisOutcome
from glmtts.say import Say, message_of
from glmtts.session import SynthesisSession
from monitoring.records import peak_figure

log = logging.getLogger(__name__)

STATUSES = ("ok", "failed", "skipped")


@dataclass(frozen=True)
class LineResult:
    """How one line of the batch ended; also its manifest entry (:meth:`to_entry`).

    Memory figures are those of the synthesis attempt that succeeded (its tracked event), for the
    figure named by ``memory``: ``"host_rss"`` (this process's resident memory, on the CPU) or
    ``"torch_reserved"`` (the torch allocator's reserved pool, on CUDA).

    Attributes:
        line: 1-based line number in the JSONL.
        uttid: The line's id (None when the line had no readable one).
        status: ``ok``, ``failed`` (ran and failed) or ``skipped`` (invalid, did not run).
        reason: Why it failed or was skipped; None when ok.
        wav: File name of its WAV in the output folder (ok lines only).
        sample_rate: Hz of the WAV.
        audio_s: Seconds of audio.
        wall_s: Seconds the line took: synthesis (a model load and a retry included) + writing.
        load_s: Seconds of that spent loading the model, when this line loaded it.
        attempts: Synthesis attempts (2 after an out-of-memory retry; 0 when skipped).
        recovery: What the out-of-memory recovery did, in plain words; None when none ran.
        memory: Which figure the byte counts below are (see above); None when not measured.
        retained_bytes: after - before: what the synthesis left behind.
        peak_bytes: Largest value of the figure during the synthesis.
        peak_delta_bytes: peak - before: the headroom it needed.
        seed: Seed the engine used (drawn when the line gave none): rerun with it to get the
            same audio.
        engine: Engine that ran it.
        device: Device it ran on.
        notes: What was changed or ignored on the line.
        resumed: True when it finished ok in an earlier run and was not run again.
        key: Digest of what the line asked for (a resumed run redoes a line whose key changed).
    """

    line: int
    uttid: str | None
    status: str
    reason: str | None = None
    wav: str | None = None
    sample_rate: int | None = None
    audio_s: float | None = None
    wall_s: float | None = None
    load_s: float | None = None
    attempts: int = 0
    recovery: str | None = None
    memory: str | None = None
    retained_bytes: int | None = None
    peak_bytes: int | None = None
    peak_delta_bytes: int | None = None
    seed: int | None = None
    engine: str | None = None
    device: str | None = None
    notes: tuple[str, ...] = ()
    resumed: bool = False
    key: str | None = None

    def to_entry(self) -> dict[str, Any]:
        """The manifest entry (JSON-ready); ``resumed`` is left out, a time stamp added."""
        entry = asdict(self)
        entry.pop("resumed")
        entry["notes"] = list(self.notes)
        for name in ("audio_s", "wall_s", "load_s"):
            if entry[name] is not None:
                entry[name] = round(entry[name], 4)
        entry["finished_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        return entry

    @classmethod
    def from_entry(cls, entry: dict[str, Any], line: int) -> LineResult:
        """An earlier run's ok entry, as this run's result for line ``line``."""
        known = {k: entry.get(k) for k in cls.__dataclass_fields__ if k in entry}
        notes = known.get("notes")
        known["notes"] = tuple(str(n) for n in notes) if isinstance(notes, list) else ()
        known.update(line=line, resumed=True, status="ok")
        return cls(**known)


@dataclass(frozen=True)
class Progress:
    """Where a batch stands.

    Attributes:
        total: Non-blank lines in the JSONL.
        done: Lines finished so far (ok, failed, skipped).
        ok: Lines that ended ok (``resumed`` of them in an earlier run).
        failed: Lines that ran and failed.
        skipped: Invalid lines (not run).
        resumed: Lines done in an earlier run.
        audio_s: Seconds of audio of the ok lines.
        elapsed_s: Seconds since the run started.
        eta_s: Estimated seconds left (from the seconds per character of the lines run so far,
            model loads left out); None before the first line has run.
    """

    total: int
    done: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        """Finished share of the lines, 0..1."""
        return self.done / self.total if self.total else 1.0

    def summary(self) -> str:
        """``"3 of 9 lines ok, 6 skipped (invalid), 0 failed"`` (and those from an earlier run)."""
        text = (f"{self.ok} of {self.total} line{'s' if self.total != 1 else ''} ok, "
                f"{self.skipped} skipped (invalid), {self.failed} failed")
        return text + (f"; {self.resumed} ok from an earlier run" if self.resumed else "")

    @property
    def worst(self) -> str:
        """The worst outcome so far: ``failed``, ``skipped`` or ``ok``."""
        return "failed" if self.failed else "skipped" if self.skipped or not self.ok else "ok"

    @property
    def all_ok(self) -> bool:
        """Every valid line ended ok (and there was at least one)."""
        return self.failed == 0 and self.ok > 0 and self.ok + self.skipped == self.total


def _memory(outcome: SynthesisOutcome) -> dict[str, Any]:
    name = peak_figure(outcome.record)
    change = getattr(outcome.record.breakdown, name)
    if change.before_bytes is None:
        return {}
    return {"memory": name, "retained_bytes": change.retained_bytes,
            "peak_bytes": change.peak_bytes, "peak_delta_bytes": change.peak_delta_bytes}


@dataclass
class _Rate:
    """Seconds per character of the lines run so far, for the ETA."""

    seconds: float = 0.0
    chars: int = 0
    pending_chars: int = 0

    def eta(self) -> float | None:
        if not self.chars:
            return None
        return self.pending_chars * self.seconds / self.chars


class BatchRunner:
    """Runs a :class:`BatchPlan` into an output folder through a :class:`SynthesisSession`.

    Args:
        plan: The checked JSONL (see :func:`glmtts.batch.load_tasks`).
        output: Output folder (created if needed).
        session: The session whose engine speaks the lines; its tracker measures each one, and
            on out-of-memory it cleans up and retries once (see
            :meth:`SynthesisSession.synthesize`). Lines naming another engine switch its engine
            (once per engine: lines run grouped by engine); the original engine is restored at
            the end.
        resume: Continue a folder that already has a manifest: lines already ``ok`` there (same
            request, WAV present) are not run again. Without it, such a folder is refused.

    Lines are reported in :meth:`BatchPlan.run_order`: invalid (skipped) lines first, then the
    valid ones grouped by engine. Entering the runner takes the folder's lock, removes temporary
    WAVs an interrupted run left and cuts a torn last manifest line; :attr:`messages` says what
    it found.

    Raises (on entering):
        BatchInputError: the folder cannot be created or written, another run holds it, or it
            has a manifest and ``resume`` is False.
    """

    def __init__(self, plan: BatchPlan, output: str | Path, session: SynthesisSession, *,
                 resume: bool = False) -> None:
        self.plan = plan
        self.output = Path(output)
        self.session = session
        self.resume = resume
        self.messages: list[str] = []
        self.results: list[LineResult] = []
        self.progress = Progress(total=plan.lines)
        self._lock: OutputLock | None = None
        self._manifest: Manifest | None = None
        self._earlier: dict[str, dict[str, Any]] = {}
        self._engine0 = (session.engine_name, dict(session.engine_options))
        self._t0 = 0.0
        self._rate = _Rate()
        self._chars = {t.line: len(t.request.text) for t in plan.tasks}

    # ------------------------------------------------------------------ setup and teardown
    def __enter__(self) -> Self:
        folder = prepare_folder(self.output)
        self.output = folder
        lock = OutputLock(folder)
        lock.acquire()
        try:
            manifest = Manifest(folder)
            if manifest.exists() and not self.resume:
                raise BatchInputError(Say("{folder} already holds a batch ({file}); resume it "
                                          "(--resume) or choose another output folder",
                                          folder=str(folder), file=manifest.path.name))
            removed = clean_temp_files(folder)
            if removed:
                self.messages.append(Say("removed {count} unfinished WAV(s) of an interrupted "
                                         "run", count=len(removed)))
            if self.resume:
                self._earlier = latest_entries(read_manifest(manifest.path))
            cut = manifest.open()
            if cut:
                self.messages.append(Say("cut off a torn last manifest line ({size} bytes) of "
                                         "an interrupted run", size=cut))
        except OSError as exc:
            lock.release()
            raise BatchInputError(Say("cannot use the output folder {folder}: {error}",
                                      folder=str(folder),
                                      error=exc.strerror or str(exc))) from None
        except BaseException:
            lock.release()
            raise
        self._lock, self._manifest = lock, manifest
        pending = [t for t in self.plan.tasks if self._earlier_ok(t) is None]
        self._rate.pending_chars = sum(len(t.request.text) for t in pending)
        done = len(self.plan.tasks) - len(pending)
        if done:
            self.messages.append(Say("{count} line(s) already done in an earlier run",
                                     count=done))
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Restore the session's engine, close the manifest, release the folder (idempotent)."""
        if self.session.engine_name != self._engine0[0]:
            self.session.switch_engine(*self._engine0)
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------------ running
    def __iter__(self) -> Iterator[LineResult]:
        if self._manifest is None:
            raise RuntimeError("use the BatchRunner in a with block")
        for entry in self.plan.run_order():
            if isinstance(entry, InvalidLine):
                result = LineResult(entry.line, entry.uttid, "skipped", reason=entry.reason)
            else:
                earlier = self._earlier_ok(entry)
                if earlier is not None:
                    result = LineResult.from_entry(earlier, entry.line)
                else:
                    result = self._run(entry)
            if not result.resumed:
                self._manifest.append(result.to_entry())
            self._count(result)
            self.results.append(result)
            yield result

    def run(self, on_line: Callable[[LineResult, Progress], None] | None = None
            ) -> Progress:
        """Run every line (inside the ``with`` block), calling ``on_line`` after each."""
        for result in self:
            if on_line is not None:
                on_line(result, self.progress)
        return self.progress

    def _earlier_ok(self, task: BatchTask) -> dict[str, Any] | None:
        entry = self._earlier.get(task.uttid)
        if entry is None or entry.get("status") != "ok" or entry.get("key") != task.key:
            return None
        wav = entry.get("wav")
        if wav != task.wav_name or not (self.output / task.wav_name).is_file():
            return None
        problem = _wav_problem(self.output / task.wav_name, entry)
        if problem is not None:
            log.warning("line %d (%s): the earlier WAV %s; synthesising it again", task.line,
                        task.uttid, problem)
            return None
        return entry

    def _session_for(self, task: BatchTask) -> SynthesisSession:
        if task.engine != self.session.engine_name:
            log.info("line %d: switching to the %s engine", task.line, task.engine)
            options = self._engine0[1] if task.engine == self._engine0[0] else {}
            self.session.switch_engine(task.engine, options)
        return self.session

    def _run(self, task: BatchTask) -> LineResult:
        base: dict[str, Any] = {"line": task.line, "uttid": task.uttid, "engine": task.engine,
                                "notes": task.notes, "key": task.key}
        t0 = time.perf_counter()
        try:
            session = self._session_for(task)
            outcome = session.synthesize(task.request)
        except OutOfMemoryError as exc:  # the session's cleanup and retry did not help
            return LineResult(status="failed", reason=message_of(exc), attempts=2,
                              wall_s=time.perf_counter() - t0, **base)
        except GlmTtsError as exc:  # bad voice, device, request the engine refuses
            return LineResult(status="failed", reason=message_of(exc), attempts=1,
                              wall_s=time.perf_counter() - t0, **base)
        except Exception as exc:  # one line's bug must not stop the batch; logged, recorded
            log.exception("line %d (%s) failed", task.line, task.uttid)
            return LineResult(status="failed", reason=f"{type(exc).__name__}: {exc}",
                              attempts=1, wall_s=time.perf_counter() - t0, **base)
        result = outcome.result
        measured = {
            "sample_rate": result.sample_rate, "audio_s": result.duration_s,
            "attempts": len(outcome.attempts) or 1, "recovery": outcome.recovery,
            "load_s": outcome.load.duration_s if outcome.load is not None else None,
            "seed": result.metadata.get("seed"), "device": result.metadata.get("device"),
            **_memory(outcome),
        }
        try:
            write_wav_atomic(self.output / task.wav_name, result.audio, result.sample_rate)
        except OSError as exc:
            return LineResult(status="failed", wall_s=time.perf_counter() - t0,
                              reason=Say("cannot write {file}: {error}", file=task.wav_name,
                                         error=exc.strerror or str(exc)),
                              **base, **measured)
        return LineResult(status="ok", wav=task.wav_name, wall_s=time.perf_counter() - t0,
                          **base, **measured)

    def _count(self, result: LineResult) -> None:
        p = self.progress
        counts = {"ok": p.ok, "failed": p.failed, "skipped": p.skipped}
        counts[result.status] += 1
        rate = self._rate
        if result.status != "skipped" and not result.resumed:
            task_chars = self._chars[result.line]
            rate.pending_chars -= task_chars
            if result.wall_s is not None:
                rate.seconds += max(0.0, result.wall_s - (result.load_s or 0.0))
                rate.chars += task_chars
        self.progress = Progress(
            total=p.total, done=p.done + 1, resumed=p.resumed + int(result.resumed),
            audio_s=p.audio_s + ((result.audio_s or 0.0) if result.status == "ok" else 0.0),
            elapsed_s=time.perf_counter() - self._t0, eta_s=rate.eta(), **counts)


def _wav_problem(path: Path, entry: dict[str, Any]) -> str | None:
    """Why a WAV an earlier run wrote cannot be trusted (unreadable, another rate, a length other
    than the manifest says: truncated), or None."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as exc:
        return f"cannot be read ({exc})"
    if entry.get("sample_rate") not in (None, info.samplerate):
        return f"is at {info.samplerate} Hz, not {entry['sample_rate']} Hz"
    expected = entry.get("audio_s")
    if isinstance(expected, (int, float)) and abs(info.frames / info.samplerate - expected) > (
            2.0 / info.samplerate + 1e-3):
        return (f"holds {info.frames / info.samplerate:.3f} s, not the {expected:.3f} s the "
                f"manifest records (truncated?)")
    return None


def run_batch(plan: BatchPlan, output: str | Path, session: SynthesisSession, *,
              resume: bool = False,
              on_line: Callable[[LineResult, Progress], None] | None = None
              ) -> tuple[Progress, list[LineResult]]:
    """Run ``plan`` into ``output`` in one call; ``on_line(result, progress)`` after each line.

    Returns:
        The final progress and every line's result, in :meth:`BatchPlan.run_order` (invalid
        lines first, then the valid ones grouped by engine, each group in file order).

    Raises:
        BatchInputError: see :class:`BatchRunner`.
        BatchOutputError: the manifest could not be written (the batch stops: nothing more
            could be recorded).
    """
    with BatchRunner(plan, output, session, resume=resume) as runner:
        runner.run(on_line)
        return runner.progress, runner.results
