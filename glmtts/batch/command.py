"""``python -m glmtts batch TASKS.jsonl -o OUTDIR [--engine NAME] [--resume] [--cpu]``.

Prints one line per finished line and a summary. Exit status: 0 when every valid line ended ok,
1 otherwise (a line failed, or no line was valid), 2 for usage errors (tasks file missing,
output folder unusable, or already holding a batch without ``--resume``). SIGINT/SIGTERM finish the
line under way, release the model, close the store and exit 0 (``--resume`` finishes the rest).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from glmtts.batch.runner import LineResult, Progress
from glmtts.batch.tasks import BatchInputError

USAGE_ERROR = 2


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:+.1f} MiB"


_FIGURES = {"host_rss": "host RSS", "torch_reserved": "torch reserved"}


def format_line(result: LineResult, progress: Progress) -> str:
    """One printed line for a finished batch line (plus indented notes)."""
    width = len(str(progress.total))
    head = f"[{progress.done:>{width}}/{progress.total}] {result.status:<7} "
    name = result.uttid if result.uttid is not None else f"line {result.line}"
    if result.status == "skipped":
        which = f"line {result.line}" + (f" ({result.uttid})" if result.uttid else "")
        return f"{head}{which}: {result.reason}"
    if result.resumed:
        return f"{head}{name}  (done in an earlier run)"
    wall = f"{result.wall_s:.2f} s" if result.wall_s is not None else "n/a"
    if result.status == "failed":
        text = f"{head}{name}  {wall}  {result.reason}"
    else:
        figure = _FIGURES.get(result.memory or "", result.memory or "memory")
        text = (f"{head}{name}  {wall}  audio {result.audio_s or 0:.2f} s  {figure} retained "
                f"{_mib(result.retained_bytes)}, peak {_mib(result.peak_delta_bytes)}")
        if result.load_s is not None:
            text += f"  (model load {result.load_s:.2f} s)"
    if progress.eta_s is not None and progress.done < progress.total:
        eta = progress.eta_s
        text += f"  [about {eta:.1f} s left]" if eta < 10 else f"  [about {eta:.0f} s left]"
    extra = [f"retry: {result.recovery}"] if result.recovery else []
    extra += [f"note: {n}" for n in result.notes]
    return "\n".join([text, *(f"    {e}" for e in extra)])


def format_summary(progress: Progress) -> str:
    resumed = f" ({progress.resumed} from an earlier run)" if progress.resumed else ""
    return (f"summary: {progress.ok} ok{resumed}, {progress.failed} failed, "
            f"{progress.skipped} skipped of {progress.total} line(s); "
            f"{progress.audio_s:.1f} s of audio in {progress.elapsed_s:.2f} s wall")


def cmd_batch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the ``batch`` subcommand; returns the exit status."""
    from glmtts.batch.runner import BatchRunner
    from glmtts.batch.tasks import load_tasks
    from glmtts.device import resolve_device
    from glmtts.errors import DeviceUnavailableError
    from glmtts.paths import event_store_path
    from glmtts.session import SynthesisSession
    from glmtts.shutdown import GracefulShutdown, ShutdownRequested
    from monitoring import open_store

    out = out or sys.stdout
    device = "cpu" if args.cpu else args.device
    try:
        resolve_device(device)
    except DeviceUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    store = open_store(event_store_path())
    from glmtts.cli import UsageError, engine_options

    try:
        options = engine_options(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    try:
        session = SynthesisSession(args.engine, engine_options=options, device=device,
                                   store=store, label="batch",
                                   isolate=True if args.isolate else None, python=args.python)
        try:
            plan = load_tasks(args.tasks, engine=args.engine,
                              engines={args.engine: session.engine})
            if not plan.lines:
                print(f"error: {args.tasks} holds no tasks (no non-blank line)", file=sys.stderr)
                return 1
            with BatchRunner(plan, args.output, session, resume=args.resume) as runner:
                print(f"{plan.lines} line(s): {len(plan.tasks)} valid, {len(plan.invalid)} "
                      f"invalid; writing to {runner.output}", file=out, flush=True)
                if store.fallback_reason:
                    print(f"note: events are kept in memory only: {store.fallback_reason}",
                          file=out)
                for message in runner.messages:
                    print(f"note: {message}", file=out, flush=True)
                # SIGINT/SIGTERM: finish the line under way, then stop cleanly (model released,
                # store closed, exit 0); a second signal stops at once.
                with GracefulShutdown(interrupt=False) as stop:
                    for result in runner:
                        print(format_line(result, runner.progress), file=out, flush=True)
                        if stop.requested:
                            break
                progress = runner.progress
                if stop.requested:
                    left = progress.total - progress.done
                    print(f"stopped by a signal: {progress.done} line(s) done, {left} left; "
                          f"run again with --resume to finish", file=out, flush=True)
                    return 0
        except BatchInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USAGE_ERROR
        except (KeyboardInterrupt, ShutdownRequested):
            print("interrupted: finished lines are in the manifest; run again with --resume",
                  file=sys.stderr)
            return 0
        finally:
            session.close()
    finally:
        store.close()
    print(format_summary(progress), file=out)
    print(f"manifest: {runner.output / 'manifest.jsonl'}", file=out, flush=True)
    return 0 if progress.all_ok else 1
