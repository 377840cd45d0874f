"""Command line: ``python -m monitoring snapshot`` prints this process's view of memory as JSON.

A check in the spirit of ``nvidia-smi`` that also works without a GPU: NVML figures are null
and ``nvml_reason`` says why. The process running the command has not imported torch, so the
torch allocator fields are null too (``torch_reason``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from monitoring.probes import Probes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring", description="Memory observability tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    snapshot = commands.add_parser(
        "snapshot", help="print every GPU's and this host's memory figures as JSON"
    )
    snapshot.add_argument("--gpu-index", type=int, default=None, help="NVML index to watch")
    snapshot.add_argument("--indent", type=int, default=2, help="JSON indent (0: one line)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "snapshot":
        snapshot = Probes(gpu_index=args.gpu_index).snapshot()
        print(json.dumps(snapshot.to_dict(), indent=args.indent or None))
    return 0
