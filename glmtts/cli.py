"""Command line: ``python -m glmtts synth "TEXT" -o out.wav``."""

from __future__ import annotations

import argparse
import logging
import os
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


def engine_arg(value: str) -> str:
    """``--engine``: a registered engine, or an engine class by import path
    (``package.module:Class``, e.g. an engine of your own)."""
    from glmtts.engines import engine_names

    if value in engine_names() or ":" in value:
        return value
    raise argparse.ArgumentTypeError(f"unknown engine {value!r}; choose one of "
                                     f"{', '.join(engine_names())} (or package.module:Class)")


class UsageError(GlmTtsError):
    """An option the chosen engine does not take, or a missing one it needs (exit status 2)."""


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose where and how an engine runs (``synth`` and ``batch``)."""
    parser.add_argument("--home", help="GLM-TTS checkout folder (default: $GLMTTS_HOME)")
    parser.add_argument("--phoneme", action="store_true",
                        help="GLM-TTS phoneme mode (upstream's use_phoneme)")
    parser.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"),
                        help="weight precision of glm-tts (its language model and flow) and "
                             "the twin (default auto: fp32, unless fp32 is predicted not to "
                             "fit the GPU's free memory and 16 bits would)")
    parser.add_argument("--isolate", action="store_true",
                        help="run the engine in a worker process (glm-tts always does, with "
                             "the interpreter of --python)")
    parser.add_argument("--python",
                        help="the worker's interpreter (default: $GLMTTS_PYTHON, else "
                             "$GLMTTS_HOME/.venv/bin/python, else this one)")
    parser.add_argument("--no-cache", action="store_true",
                        help="read the voice from its ONNX file, not from the converted-voice "
                             "cache ($GLMTTS_CACHE_DIR, default ~/.cache/glmtts)")


def engine_options(args: argparse.Namespace, chars: int | None = None) -> dict[str, object]:
    """The engine's constructor options from ``args``; :class:`UsageError` for one that the
    chosen engine does not take. ``chars`` (``synth``'s text length) lets ``--runtime auto``
    choose numpy (see :func:`_numpy_pays`)."""
    import inspect

    from glmtts.engines import engine_class

    accepted = inspect.signature(engine_class(args.engine).__init__).parameters
    given = {"voice": getattr(args, "voice", None), "home": args.home,
             "use_phoneme": True if args.phoneme else None,
             "cache": False if getattr(args, "no_cache", False) else None,
             "dtype": getattr(args, "dtype", None), "runtime": getattr(args, "runtime", None)}
    if given["runtime"] == "auto":
        given["runtime"] = None
        if "runtime" in accepted and chars is not None and _numpy_pays(args, chars):
            given["runtime"] = "numpy"
    flags = {"voice": "--voice", "home": "--home", "use_phoneme": "--phoneme",
             "cache": "--no-cache", "dtype": "--dtype", "runtime": "--runtime"}
    options: dict[str, object] = {}
    if "dtype" in accepted and given["dtype"] is None:
        options["dtype"] = "auto"  # said, so that an engine in a worker is known to decide
    for name, value in given.items():
        if value is None:
            continue
        if name not in accepted:
            if name == "voice":
                continue  # a request knob too: the engine's capabilities say why it is refused
            raise UsageError(f"{flags[name]}: the {args.engine} engine does not take it")
        options[name] = value
    return options


def build_parser() -> argparse.ArgumentParser:
    from glmtts.engines import DEFAULT_ENGINE, engine_names

    parser = argparse.ArgumentParser(prog="python -m glmtts",
                                     description="Text-to-speech with memory accounting.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="speak a text into a WAV file")
    synth.add_argument("text", help="the text to speak ('-' reads standard input)")
    synth.add_argument("-o", "--output", type=Path, required=True, help="WAV file to write")
    synth.add_argument("--engine", default=DEFAULT_ENGINE, type=engine_arg,
                       help=f"one of {', '.join(engine_names())} (default {DEFAULT_ENGINE})")
    synth.add_argument("--voice", help="voice name or path of a Piper .onnx voice")
    synth.add_argument("--sample-rate", type=_rate, help="output rate in Hz (default: native)")
    synth.add_argument("--seed", type=_seed, help="random seed (same seed, same audio)")
    synth.add_argument("--speed", type=float, help="speaking rate (0.5-2.0; default 1)")
    synth.add_argument("--reference", type=Path,
                       help="reference recording to clone (glm-tts: 2-30 s of clear speech)")
    synth.add_argument("--reference-text", help="the words spoken in --reference")
    synth.add_argument("--kv-cache", action="store_true",
                       help="GLM-TTS's prompt-history cache for long texts")
    synth.add_argument("--sampling", choices=("ras", "topk"),
                       help="GLM-TTS token sampling (default ras)")
    synth.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    synth.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    synth.add_argument("--runtime", choices=("auto", "torch", "numpy"), default="auto",
                       help="what runs the piper voice: auto (numpy on the CPU for a text of "
                            "up to 400 characters at the voice's own rate: no torch import, "
                            "about 1.5 s sooner; torch otherwise), torch or numpy (CPU only)")
    add_engine_arguments(synth)
    batch = sub.add_parser("batch", help="speak every line of a JSONL file (upstream GLM-TTS "
                                         "fields) into WAVs and a manifest")
    batch.add_argument("tasks", type=Path, help="JSONL file: uttid, syn_text, prompt_text, "
                                                "prompt_speech (+ sample_rate, seed, ...)")
    batch.add_argument("-o", "--output", type=Path, required=True,
                       help="output folder (WAVs and manifest.jsonl)")
    batch.add_argument("--engine", default=DEFAULT_ENGINE, type=engine_arg,
                       help="engine of lines that name none")
    batch.add_argument("--resume", action="store_true",
                       help="continue an interrupted batch: lines already ok are not redone")
    batch.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    batch.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_engine_arguments(batch)
    serve = sub.add_parser("serve", help="HTTP service: synthesis, cleanup, memory, /metrics")
    from service.server import add_serve_arguments

    add_serve_arguments(serve)
    sweep = sub.add_parser("sweep", help="measure memory and latency over KV switch x sample "
                                         "rate x text length (x dtype for the twin) into a CSV")
    from glmtts.sweep_cli import add_sweep_arguments

    add_sweep_arguments(sweep)
    return parser


#: synth's request options -> (the knob in Capabilities.honours, the flag)
_KNOB_FLAGS = (("voice", "voice", "--voice"), ("reference", "reference_audio", "--reference"),
               ("kv_cache", "use_kv_cache", "--kv-cache"),
               ("sampling", "sampling_method", "--sampling"), ("speed", "speed", "--speed"),
               ("seed", "seed", "--seed"))


def _refuse_unused(args: argparse.Namespace, engine: object) -> None:
    caps = engine.capabilities  # type: ignore[attr-defined]
    for attr, knob, flag in _KNOB_FLAGS:
        value = getattr(args, attr)
        if value is None or value is False:
            continue
        why = caps.reason(knob)
        if why is not None:
            raise UsageError(f"{flag}: the {args.engine} engine does not take it ({why})")
    if args.reference_text is not None and args.reference is None:
        raise UsageError("--reference-text describes --reference: give the recording too")


def cmd_synth(args: argparse.Namespace) -> int:
    from glmtts.audio import write_wav
    from glmtts.auto_precision import cli_decide
    from glmtts.engines import create_engine
    from glmtts.request import SynthesisRequest
    from glmtts.worker.engine import WorkerEngine, isolated_by_default

    text = sys.stdin.read() if args.text == "-" else args.text
    folder = args.output.expanduser().resolve().parent
    if not folder.is_dir():
        raise GlmTtsError(f"the output folder {folder} does not exist")
    if args.output.expanduser().is_dir():
        raise UsageError(f"-o {args.output} is a folder: give a file name, e.g. "
                         f"{args.output / 'out.wav'}")
    options = engine_options(args, chars=len(text))
    request = SynthesisRequest(
        text=text, voice=args.voice, sample_rate=args.sample_rate, seed=args.seed,
        speed=1.0 if args.speed is None else args.speed, reference_audio=args.reference,
        reference_text=args.reference_text, use_kv_cache=args.kv_cache,
        sampling_method=args.sampling or "ras")
    if args.isolate or isolated_by_default(args.engine):
        engine = WorkerEngine(args.engine, options, python=args.python)
    else:
        engine = create_engine(args.engine, **options)
    try:
        _refuse_unused(args, engine)
        engine.check(request)
        t0 = time.perf_counter()
        numpy = options.get("runtime") == "numpy"  # CPU only: auto means the CPU then
        cpu = args.cpu or (numpy and args.device.strip().lower() == "auto")
        device = engine.resolve_device("cpu" if cpu else args.device)
        choice = cli_decide(engine, device, request)
        engine.load(device)
        load_s = time.perf_counter() - t0
        precision = precision_lines(engine, device, choice)
        result = engine.synthesize(request)
        write_wav(args.output, result.audio, result.sample_rate)  # before anything unloads
        speech = engine.capabilities.speech
    finally:
        engine.close()
    if not speech:
        print("note: this engine's audio is not speech (a memory twin)")
    for note in request.notes:
        print(f"note: {note}")
    for line in precision:
        print(line)
    worker = result.metadata.get("worker")
    where = f", worker pid {worker['pid']}" if worker else ""
    runtime = ", numpy runtime" if result.metadata.get("runtime") == "numpy" else ""
    print(f"wrote {args.output} ({result.sample_rate} Hz, seed {result.metadata.get('seed')}, "
          f"device {result.metadata.get('device')}{runtime}{where})")
    print(f"duration {result.duration_s:.2f} s, wall {result.wall_s:.2f} s "
          f"(load {load_s:.2f} s), real-time factor {result.rtf:.3f}")
    return 0


#: ``--runtime auto`` runs numpy up to this many characters: importing torch costs about
#: 1.7 s here, and numpy takes about 3.6 ms per character more than torch (measured with
#: bench/cold_start.py and the runtimes' test texts, 2026-12-01).
NUMPY_MAX_CHARS = 400


def _numpy_pays(args: argparse.Namespace, chars: int) -> bool:
    """Whether ``--runtime auto`` runs numpy: in process, on the CPU, at the voice's own rate
    (other rates are resampled by torch), for a text of at most :data:`NUMPY_MAX_CHARS`
    characters (where importing torch would cost more than the synthesis gains from it)."""
    on_cpu = args.cpu or args.device.strip().lower() == "cpu"
    return (on_cpu and chars <= NUMPY_MAX_CHARS and args.sample_rate is None
            and not _isolated(args))


def precision_lines(engine: object, device: str, choice: object) -> list[str]:
    """What ``synth`` says about the loaded precision: the weights' size in it, why ``auto``
    chose 16 bits, and a note where the CPU has no native kernels for it."""
    from glmtts.precision import slow_note

    dtype = getattr(engine, "dtype_name", None)
    if dtype is None:
        return []
    weights = engine.model_bytes()  # type: ignore[attr-defined]
    size = f"{weights:,} bytes ({weights / 2**20:.1f} MiB)" if weights else "unknown size"
    lines = [f"weights: {size} in {dtype}"
             + (" (auto)" if getattr(engine, "requested_dtype", None) == "auto" else "")]
    reason = getattr(choice, "line", None)
    if reason:
        lines.append(f"note: {reason}")
    slow = slow_note(dtype, device)
    if slow:
        lines.append(f"note: {slow}")
    return lines


def cmd_batch(args: argparse.Namespace) -> int:
    from glmtts.batch.command import cmd_batch as run

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from service.server import cmd_serve as run

    return run(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from glmtts.sweep_cli import cmd_sweep as run

    return run(args)


def _exit_now(code: int) -> None:
    """End the process at once with ``code``, its output flushed: skips the interpreter's
    teardown, which after importing torch takes about 0.5 s (collecting torch's tens of
    thousands of module objects) and has nothing left to do after ``synth``."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # what the interpreter exits with when the flush fails
    os._exit(code)


def main(argv: Sequence[str] | None = None, *, fast_exit: bool = False) -> int:
    """Run one command; ``fast_exit`` (``python -m glmtts``) ends the process right after an
    in-process ``synth`` (see :func:`_exit_now`); the other commands end normally."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    code = _run(args)
    if fast_exit and args.command == "synth" and not _isolated(args):
        _exit_now(code)  # (a worker's last output lines may still be on their way: not then)
    return code


def _isolated(args: argparse.Namespace) -> bool:
    from glmtts.worker.engine import isolated_by_default

    return bool(args.isolate) or isolated_by_default(args.engine)


def _run(args: argparse.Namespace) -> int:
    try:
        return {"synth": cmd_synth, "batch": cmd_batch,
                "serve": cmd_serve, "sweep": cmd_sweep}[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GlmTtsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        text = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        print(f"error: {text}", file=sys.stderr)
        return 1
