"""``python -m glmtts serve``: build the service, run it under uvicorn, shut down cleanly.

Shutdown (SIGINT/SIGTERM): uvicorn stops accepting connections and lets running requests finish
(at most ``--graceful-timeout`` seconds); then the service releases its model with a measured
full cleanup (recorded in the store), stops the sampler and the CUDA memory history, closes the
store, and the process exits 0. Every event was already committed when it happened.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

from glmtts.shutdown import GracefulShutdown
from service.settings import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIERS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PER_CLIENT,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MEMORY_HISTORY,
    DEFAULT_PORT,
    TOKEN_ENV,
    ServiceSettings,
    token_from_env,
)

log = logging.getLogger(__name__)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options."""
    from glmtts.engines import DEFAULT_ENGINE, engine_names
    from glmtts.request import MAX_TEXT_CHARS

    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1; any other address "
                             "needs a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default "
                                                                       f"{DEFAULT_PORT})")
    from glmtts.cli import engine_arg

    parser.add_argument("--engine", default=DEFAULT_ENGINE, type=engine_arg,
                        help=f"one of {', '.join(engine_names())} (default {DEFAULT_ENGINE})")
    parser.add_argument("--voice", help="voice name or path of a Piper .onnx voice")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--token", default=None,
                        help=f"access token required on every request (Authorization: Bearer "
                             f"...); default ${TOKEN_ENV}")
    parser.add_argument("--metrics-public", action=argparse.BooleanOptionalAction, default=True,
                        help="serve /metrics without the token (default: yes)")
    parser.add_argument("--db", default=None,
                        help="event store (SQLite path or :memory:); default $GLMTTS_DB or "
                             "data/memory.sqlite3")
    parser.add_argument("--preload", action="store_true",
                        help="load the model at start (default: on the first synthesis)")
    parser.add_argument("--max-text-chars", type=int, default=MAX_TEXT_CHARS,
                        help=f"longest text per request (default {MAX_TEXT_CHARS})")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest JSON body (413 above)")
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES,
                        help="largest multipart request with reference audio (413 above)")
    parser.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S,
                        help="seconds a request body may stall between chunks (408 above)")
    parser.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S,
                        help="seconds a client has to send its request line and headers "
                             "(408 and closed above)")
    parser.add_argument("--max-per-client", type=int, default=DEFAULT_MAX_PER_CLIENT,
                        help="open connections one client address may hold (429 above; 0: no "
                             "cap; behind a reverse proxy every client has the proxy's "
                             "address)")
    parser.add_argument("--max-pending", type=int, default=DEFAULT_MAX_PENDING,
                        help="syntheses allowed to wait for the device (429 above)")
    parser.add_argument("--memory-history", type=int, default=DEFAULT_MEMORY_HISTORY,
                        help="CUDA memory history ring, in entries, for /v1/memory/snapshot "
                             "(0: off; CUDA only)")
    parser.add_argument("--memory-budget", type=_size, default=None,
                        help="cap of the memory that admitted syntheses may take above the "
                             "loaded model, e.g. 512MiB or 4GiB (a plain number is MiB); "
                             "default: the free memory of the model's device (GPU: NVML free; "
                             "CPU: available RAM)")
    parser.add_argument("--unseen-peak", type=_size, default="2GiB",
                        help="predicted peak of a request before any usable history "
                             "(default 2GiB)")
    parser.add_argument("--idle-tiers", type=_tiers, default=DEFAULT_IDLE_TIERS,
                        help="idle seconds before a light cleanup, unloading the model and "
                             "restarting the engine worker, e.g. 300,900,3600 (the default); "
                             "'off' keeps everything loaded")
    parser.add_argument("--graceful-timeout", type=float, default=2.5,
                        help="seconds running requests get to finish on SIGINT/SIGTERM")
    from glmtts.cli import add_engine_arguments

    add_engine_arguments(parser)


def _size(text: str) -> int:
    from service.admission import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tiers(text: str) -> tuple[float, ...]:
    from service.errors import ServiceConfigError
    from service.settings import parse_tiers

    try:
        return parse_tiers(text)
    except ServiceConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """Service settings from the parsed ``serve`` options (token from the environment too).

    Raises:
        UsageError: an engine option the chosen engine does not take.
    """
    from glmtts.cli import engine_options

    return ServiceSettings(
        host=args.host, port=args.port, engine=args.engine, engine_options=engine_options(args),
        isolate=True if args.isolate else None, python=args.python,
        device="cpu" if args.cpu else args.device, token=token_from_env(args.token),
        metrics_public=args.metrics_public, db=args.db, preload=args.preload,
        max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
        max_upload_bytes=args.max_upload_bytes, max_pending=args.max_pending,
        body_timeout_s=args.body_timeout, header_timeout_s=args.header_timeout,
        max_per_client=args.max_per_client,
        memory_history=args.memory_history, graceful_timeout_s=args.graceful_timeout,
        access_log=bool(getattr(args, "verbose", False)),
        memory_budget_bytes=args.memory_budget, unseen_peak_bytes=args.unseen_peak,
        idle_tiers=tuple(args.idle_tiers))


def cmd_serve(args: argparse.Namespace) -> int:
    """Entry point of ``python -m glmtts serve`` (errors: typed, printed by the CLI)."""
    code = serve(settings_from_args(args))
    _exit_if_threads_linger(code)
    return code


def serve(settings: ServiceSettings) -> int:
    """Run the service until SIGINT/SIGTERM; return the exit code (0).

    Raises:
        ServiceConfigError: settings the service refuses (public address without a token...).
        GlmTtsError: the model cannot load at start (with ``preload``).
    """
    settings.check()
    import uvicorn

    from service.app import create_app
    from service.protocol import guarded_protocol
    from service.runtime import Service

    with GracefulShutdown(interrupt=True) as stop:
        service = Service(settings)
        stop.add(service.close, name="release the model, stop the sampler, close the store")
        service.start_memory_history()
        if settings.preload:
            service.preload()
        app = create_app(service)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                                access_log=settings.access_log, lifespan="off",
                                timeout_graceful_shutdown=settings.graceful_timeout_s,
                                server_header=False,
                                http=guarded_protocol(settings.header_timeout_s,
                                                      settings.max_per_client))
        server = uvicorn.Server(config)
        print(f"serving {settings.engine} on http://{settings.host}:{settings.port} (token "
              f"{'required' if settings.token else 'off'}, /metrics "
              f"{'public' if settings.metrics_public else 'behind the token'}); Ctrl+C stops",
              flush=True)
        # uvicorn handles SIGINT/SIGTERM itself while it runs (graceful stop), then re-raises
        # the signal, which reaches our handler: the callbacks run and we return 0.
        server.run()
    return stop.exit_code


def _exit_if_threads_linger(code: int, wait_s: float = 0.5) -> None:
    """Exit now if a non-daemon thread (a synthesis past the graceful timeout) would keep the
    interpreter alive: every event is already committed, and the exit must stay prompt."""
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    for thread in others:
        thread.join(wait_s / max(len(others), 1))
    if any(t.is_alive() for t in others):
        log.warning("threads still running at exit (%s): leaving without waiting for them",
                    ", ".join(t.name for t in others if t.is_alive()))
        logging.shutdown()
        os._exit(code)
