"""The engine picker of the Synthesize page: engine, its own options, and the switch."""

from __future__ import annotations

import os
import sys
from typing import Any

import streamlit as st

from glmtts.engines import engine_names, engine_status, takes_dtype
from glmtts.engines.glm_tts.checkout import checkout_problem, engine_problem
from glmtts.errors import GlmTtsError
from glmtts.precision import DTYPE_CHOICES, dtype_problem
from glmtts.session import SynthesisSession
from glmtts.worker.client import default_python, interpreter_problem
from glmtts.worker.engine import isolated_by_default
from monitoring.i18n import N_, _, say
from ui.form_memory import KEEP
from ui.language import speaking_now


def _piper_options() -> tuple[dict[str, Any], str | None]:
    path = st.text_input(
        _("Voice"), key="voice_path", **KEEP, placeholder=_("en_US-joe-medium (embedded)"),
        help=_("Leave empty for the embedded voice, or give the path of another Piper .onnx "
               "voice (its .onnx.json beside it)")).strip()
    return ({"voice": path} if path else {}), None


def _glm_tts_options() -> tuple[dict[str, Any], str | None]:
    st.session_state.setdefault("glmtts_home", os.environ.get("GLMTTS_HOME", ""))
    home = st.text_input(_("GLM-TTS checkout folder"), key="glmtts_home", **KEEP,
                         help=_("Your clone of zai-org/GLM-TTS with its weights in ckpt/ "
                                "(default: $GLMTTS_HOME)")).strip()
    phoneme = st.checkbox(_("Phoneme mode"), key="use_phoneme", **KEEP,
                          help=_("upstream's use_phoneme: text front-end with "
                                 "grapheme-to-phoneme"))
    options = {"home": home or None, "use_phoneme": bool(phoneme)}
    if not _isolated("glm-tts"):
        return options, engine_problem(home or None)
    # In a worker, upstream's own interpreter checks its packages and CUDA (see hello).
    return options, checkout_problem(home or None)


def _no_options() -> tuple[dict[str, Any], str | None]:
    return {}, None


_OPTIONS = {"piper": _piper_options, "glm-tts": _glm_tts_options}


_DTYPE_WORDS = {"auto": N_("auto (fp32 unless it will not fit)"),
                "fp32": N_("fp32 (upstream's precision)"),
                "bf16": N_("bf16 (half the weights)"), "fp16": N_("fp16 (half the weights)")}


def _dtype_choice() -> str:
    """The precision select box (engines that offer one): a change reloads the model."""
    st.session_state.setdefault("dtype", "auto")
    return st.selectbox(
        _("Precision"), DTYPE_CHOICES, key="dtype", **KEEP,
        format_func=speaking_now(lambda d: _(_DTYPE_WORDS[d])),
        help=_("Weights of the language model and the flow: fp32 as upstream loads them, or "
               "16 bits for half their memory (a change reloads the model). auto stays fp32 "
               "on a CPU and wherever fp32 is predicted to fit the GPU's free memory."))


def _dtype_problem(session: SynthesisSession) -> str | None:
    """Why the chosen precision cannot run on the session's device (before any load)."""
    engine = session.engine
    if engine.requested_dtype in (None, "auto") or session.isolated:
        return None  # in a worker, the worker's own torch answers when it loads
    try:
        device = engine.device or engine.resolve_device(session.device)
        return dtype_problem(engine.requested_dtype, device)
    except (GlmTtsError, RuntimeError, AssertionError):
        return None  # the load says it


def _isolated(engine: str) -> bool:
    return bool(st.session_state.get(f"isolate_{engine}", isolated_by_default(engine)))


def _worker_options(engine: str) -> tuple[bool, str | None, str | None]:
    """The isolation toggle and, for a worker, its interpreter: (isolate, python, problem)."""
    key = f"isolate_{engine}"
    st.session_state.setdefault(key, isolated_by_default(engine))
    isolate = st.toggle(
        _("Run in a worker process"), key=key, **KEEP,
        help=_("The engine runs in a child process of its own (for GLM-TTS: upstream's own "
               "Python environment). A restart cleanup then frees everything it held, the CUDA "
               "context included."))
    if not isolate:
        return False, None, None
    key = f"python_{engine}"
    if engine == "glm-tts":
        st.session_state.setdefault(key, default_python(
            st.session_state.get("glmtts_home") or None))
    else:  # the app's own interpreter has what the other engines need
        st.session_state.setdefault(key, sys.executable)
    python = st.text_input(
        _("Worker interpreter") + (" (GLMTTS_PYTHON)" if engine == "glm-tts" else ""), key=key,
        **KEEP,
        help=_("The Python that runs the worker: for GLM-TTS, the one of the environment "
               "where upstream's requirements are installed (e.g. ~/GLM-TTS/.venv/bin/python)")
    ).strip()
    return True, python or None, interpreter_problem(python) if python else None


def _worker_status(session: SynthesisSession, where: st.delta_generator.DeltaGenerator
                   ) -> str | None:
    """One line on the worker, or why it cannot run (the worker's own check, run once when
    the engine is chosen; a worker ended by a restart is not started again until needed)."""
    engine = session.engine
    env = getattr(engine, "report", None)
    if env is None:
        try:
            env = engine.environment()  # type: ignore[attr-defined]
        except GlmTtsError as exc:
            where.error(say(exc))
            return str(exc)
    cuda = (_("CUDA {version}, {count} GPU(s)").format(version=env.get("cuda_version"),
                                                        count=env.get("cuda_devices"))
            if env.get("cuda_available") else _("no CUDA"))
    pid = getattr(engine, "pid", None)
    state = (_("Worker pid {pid}").format(pid=pid) if pid
             else _("Worker not running (starts when needed)"))
    where.caption(_("{state}: Python {python}, torch {torch}, {cuda}").format(
        state=state, python=env.get("python"), torch=env.get("torch"), cuda=cuda))
    return None


def engine_choice(session: SynthesisSession) -> str | None:
    """Draw the engine picker; switch the session's engine when the choice changed.

    Returns why the chosen engine cannot run here (None when it can).
    """
    # An engine in a worker is checked by the worker's interpreter, not by this one.
    status = {name: None if _isolated(name) else why for name, why in engine_status().items()}
    st.session_state.setdefault("engine", session.engine_name)
    left, right = st.columns([1, 2])
    engine = left.selectbox(
        _("Engine"), engine_names(), key="engine", **KEEP,
        format_func=speaking_now(lambda n: n if status[n] is None
                                 else _("{engine} (unavailable)").format(engine=n)))
    with right:
        options, reason = _OPTIONS.get(engine, _no_options)()
        if takes_dtype(engine):
            options["dtype"] = _dtype_choice()
        isolate, python, python_problem = _worker_options(engine)
    if not isolate:
        reason = reason or status[engine]
    reason = reason or python_problem
    if reason is not None:
        right.warning(_("{engine} cannot run here: {reason}").format(engine=engine,
                                                                      reason=say(reason)))
        return reason
    if (engine != session.engine_name or options != session.engine_options
            or isolate != session.isolated or (isolate and python != session.python)):
        try:
            session.switch_engine(engine, options, isolate=isolate, python=python)
        except GlmTtsError as exc:
            right.error(say(exc))
            return str(exc)
    problem = _dtype_problem(session)
    if problem is not None:
        right.error(problem)
        return problem
    if session.isolated:
        return _worker_status(session, right)
    return None
