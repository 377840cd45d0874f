"""Command line: ``python -m glmtts synth "TEXT" -o out.wav``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from glmtts.errors import GlmTtsError


def _seed(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the seed must be a whole number, not {value!r}") from None


def _rate(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the sample rate must be a whole number of Hz, "
                                         f"not {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from glmtts.engines import DEFAULT_ENGINE, engine_names

    parser = argparse.ArgumentParser(prog="python -m glmtts",
                                     description="Text-to-speech with memory accounting.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="speak a text into a WAV file")
    synth.add_argument("text", help="the text to speak ('-' reads standard input)")
    synth.add_argument("-o", "--output", type=Path, required=True, help="WAV file to write")
    synth.add_argument("--engine", default=DEFAULT_ENGINE, choices=engine_names())
    synth.add_argument("--voice", help="voice name or path of a Piper .onnx voice")
    synth.add_argument("--sample-rate", type=_rate, help="output rate in Hz (default: native)")
    synth.add_argument("--seed", type=_seed, help="random seed (same seed, same audio)")
    synth.add_argument("--speed", type=float, default=1.0, help="speaking rate (0.5-2.0)")
    synth.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    synth.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    batch = sub.add_parser("batch", help="speak every line of a JSONL file (upstream GLM-TTS "
                                         "fields) into WAVs and a manifest")
    batch.add_argument("tasks", type=Path, help="JSONL file: uttid, syn_text, prompt_text, "
                                                "prompt_speech (+ sample_rate, seed, ...)")
    batch.add_argument("-o", "--output", type=Path, required=True,
                       help="output folder (WAVs and manifest.jsonl)")
    batch.add_argument("--engine", default=DEFAULT_ENGINE, choices=engine_names(),
                       help="engine of lines that name none")
    batch.add_argument("--resume", action="store_true",
                       help="continue an interrupted batch: lines already ok are not redone")
    batch.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    batch.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    serve = sub.add_parser("serve", help="HTTP service: synthesis, cleanup, memory, /metrics")
    from glmtts.service.server import add_serve_arguments

    add_serve_arguments(serve)
    sweep = sub.add_parser("sweep", help="measure memory and latency over KV switch x sample "
                                         "rate x text length (x dtype for the twin) into a CSV")
    from glmtts.sweep import add_sweep_arguments

    add_sweep_arguments(sweep)
    return parser


def cmd_synth(args: argparse.Namespace) -> int:
    from glmtts.audio import write_wav
    from glmtts.engines import create_engine
    from glmtts.request import SynthesisRequest

    text = sys.stdin.read() if args.text == "-" else args.text
    folder = args.output.expanduser().resolve().parent
    if not folder.is_dir():
        raise GlmTtsError(f"the output folder {folder} does not exist")
    request = SynthesisRequest(text=text, voice=args.voice, sample_rate=args.sample_rate,
                               seed=args.seed, speed=args.speed)
    options = {"voice": args.voice} if args.voice else {}
    engine = create_engine(args.engine, **options)
    engine.check(request)
    t0 = time.perf_counter()
    engine.load("cpu" if args.cpu else args.device)
    load_s = time.perf_counter() - t0
    result = engine.synthesize(request)
    engine.unload()
    write_wav(args.output, result.audio, result.sample_rate)
    if not engine.capabilities.speech:
        print("note: this engine's audio is not speech (a memory twin)")
    for note in request.notes:
        print(f"note: {note}")
    print(f"wrote {args.output} ({result.sample_rate} Hz, seed {result.metadata.get('seed')}, "
          f"device {result.metadata.get('device')})")
    print(f"duration {result.duration_s:.2f} s, wall {result.wall_s:.2f} s "
          f"(load {load_s:.2f} s), real-time factor {result.rtf:.3f}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from glmtts.batch.command import cmd_batch as run

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from glmtts.service.server import cmd_serve as run

    return run(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from glmtts.sweep import cmd_sweep as run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"synth": cmd_synth, "batch": cmd_batch,
                "serve": cmd_serve, "sweep": cmd_sweep}[args.command](args)
    except GlmTtsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
