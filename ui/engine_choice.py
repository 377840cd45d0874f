"""The engine picker of the Synthesize page: engine, its own options, and the switch."""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from glmtts.engines import engine_class, engine_names, engine_status
from glmtts.errors import GlmTtsError
from glmtts.session import SynthesisSession


def _piper_options() -> tuple[dict[str, Any], str | None]:
    path = st.text_input(
        "Voice", key="voice_path", placeholder="en_US-joe-medium (embedded)",
        help="Leave empty for the embedded voice, or give the path of another Piper .onnx "
             "voice (its .onnx.json beside it)").strip()
    return ({"voice": path} if path else {}), None


def _glm_tts_options() -> tuple[dict[str, Any], str | None]:
    st.session_state.setdefault("glmtts_home", os.environ.get("GLMTTS_HOME", ""))
    home = st.text_input("GLM-TTS checkout folder", key="glmtts_home",
                         help="Your clone of zai-org/GLM-TTS with its weights in ckpt/ "
                              "(default: $GLMTTS_HOME)").strip()
    phoneme = st.checkbox("Phoneme mode", key="use_phoneme",
                          help="upstream's use_phoneme: text front-end with grapheme-to-phoneme")
    cls = engine_class("glm-tts")
    reason = cls.unavailable_reason_for(home or None)  # type: ignore[attr-defined]
    return {"home": home or None, "use_phoneme": bool(phoneme)}, reason


def _no_options() -> tuple[dict[str, Any], str | None]:
    return {}, None


_OPTIONS = {"piper": _piper_options, "glm-tts": _glm_tts_options}


def engine_choice(session: SynthesisSession) -> str | None:
    """Draw the engine picker; switch the session's engine when the choice changed.

    Returns why the chosen engine cannot run here (None when it can).
    """
    status = engine_status()
    st.session_state.setdefault("engine", session.engine_name)
    left, right = st.columns([1, 2])
    engine = left.selectbox(
        "Engine", engine_names(), key="engine",
        format_func=lambda n: n if status[n] is None else f"{n} (unavailable)")
    with right:
        options, reason = _OPTIONS.get(engine, _no_options)()
    reason = reason or status[engine]
    if reason is not None:
        right.warning(f"{engine} cannot run here: {reason}")
        return reason
    if engine != session.engine_name or options != session.engine_options:
        try:
            session.switch_engine(engine, options)
        except GlmTtsError as exc:
            right.error(str(exc))
            return str(exc)
    return None
