"""``python -m glmtts sweep``: the tuning sweep of :mod:`glmtts.sweep` from the command line.

:mod:`glmtts.sweep` (and the monitoring package under it) is imported only when a sweep runs:
every command builds this parser, and ``synth`` has no use for them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from glmtts.errors import GlmTtsError


def _switch(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The ``sweep`` subcommand's arguments."""
    from glmtts.engines import engine_names

    p.add_argument("-o", "--output", type=Path, required=True, help="CSV file to write")
    p.add_argument("--engine", default="twin", choices=engine_names())
    p.add_argument("--texts", nargs="+", metavar="TEXT", help="texts to speak (default: "
                                                              "three of growing length)")
    p.add_argument("--sample-rates", nargs="+", type=int, default=[24000, 32000],
                   metavar="HZ")
    p.add_argument("--kv", nargs="+", type=_switch, default=[False, True], metavar="on|off",
                   help="prompt-history KV cache settings (upstream's switch)")
    p.add_argument("--attention-cache", nargs="+", type=_switch, default=[True],
                   metavar="on|off", help="the LLM's own attention KV cache (twin only)")
    p.add_argument("--dtype", nargs="+", choices=["fp32", "bf16"], default=["fp32"],
                   help="weight dtype (twin only)")
    p.add_argument("--scale", type=float, help="twin size factor (default: 1.0 on a GPU, "
                                               "0.05 on the CPU)")
    p.add_argument("--budget-gb", type=float, help="memory budget in GiB (2^30 bytes): list "
                                                   "the configurations that fit")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--db", help="event store file (default: in memory only)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _mib(value: Any) -> str:
    from glmtts.sweep import MIB, _known

    return f"{value / MIB:,.1f}" if _known(value) else "-"


def cmd_sweep(args: argparse.Namespace) -> int:
    """``python -m glmtts sweep``: run the grid, write the CSV, print the ranking."""
    from glmtts.device import resolve_device
    from glmtts.sweep import (
        DEFAULT_TEXTS,
        GIB,
        SweepPoint,
        SweepSpec,
        rank_configurations,
        run_sweep,
    )
    from monitoring import open_store

    device = resolve_device("cpu" if args.cpu else args.device)
    scale = args.scale
    if scale is None and args.engine == "twin" and device == "cpu":
        from glmtts.engines.twin import CPU_SCALE

        scale = CPU_SCALE
        print(f"note: the twin runs at scale {scale} on the CPU (--scale 1 for upstream's size)")
    budget = None if args.budget_gb is None else int(args.budget_gb * GIB)
    spec = SweepSpec(engine=args.engine, texts=tuple(args.texts or DEFAULT_TEXTS),
                     sample_rates=tuple(args.sample_rates), kv=tuple(args.kv),
                     dtypes=tuple(args.dtype), attention_cache=tuple(args.attention_cache),
                     scale=scale, device=device, seed=args.seed, budget_bytes=budget)
    folder = args.output.expanduser().resolve().parent
    if not folder.is_dir():
        raise GlmTtsError(f"the output folder {folder} does not exist")
    store = open_store(args.db) if args.db else None

    def report(done: int, total: int, point: SweepPoint | None) -> None:
        if point is not None:
            rate = f"{point.sample_rate} Hz" if point.sample_rate else "native rate"
            print(f"[{done + 1}/{total}] {len(point.text)} chars, {rate}, KV "
                  f"{'on' if point.use_kv_cache else 'off'} {dict(point.options)}", flush=True)

    result = run_sweep(spec, store=store, progress=report)
    frame = result.frame
    frame.to_csv(args.output, index=False)
    for note in result.notes:
        print(f"note: {note}")
    ranked = rank_configurations(frame, budget)
    print(f"wrote {args.output} ({len(frame)} points); configurations, best first "
          f"(need = peak MiB above the start before loading):")
    for _, row in ranked.iterrows():
        mark = "" if budget is None else ("  fits" if row["fits"] else "  over budget")
        print(f"  {row['configuration']}: need {_mib(row['need_bytes'])} MiB "
              f"({row['need_source']}), predicted {_mib(row['predicted_bytes'])} MiB, "
              f"mean latency {row['latency_s']:.2f} s{mark}")
    if budget is not None and not ranked["fits"].any():
        print(f"no configuration fits in {args.budget_gb:g} GiB")
    return 0
