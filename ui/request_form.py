"""The one place that turns the Synthesize form's widget values into a request: the page
synthesizes it, and the sidebar's policy advises on the very same request."""

from __future__ import annotations

import streamlit as st

from glmtts.errors import GlmTtsError
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession


def request_from_form(session: SynthesisSession) -> SynthesisRequest:
    """The request the Synthesize form describes now (what pressing *Synthesize* sends).

    Knobs the engine does not honour are left at their defaults, as the disabled widgets show.

    Raises:
        InvalidRequestError: a field is unusable (empty text, ...).
    """
    state = st.session_state
    caps = session.engine.capabilities
    takes_reference = caps.reason("reference_audio") is None
    rate = state.get("sample_rate")
    return SynthesisRequest(
        text=state.get("text", ""),
        voice=session.engine_options.get("voice"),
        reference_audio=state.get("_ref_audio_path") if takes_reference else None,
        reference_text=state.get("ref_text") if takes_reference else None,
        sample_rate=int(rate) if rate in caps.sample_rates else None,
        use_kv_cache=bool(state.get("use_kv_cache", False))
        and caps.reason("use_kv_cache") is None,
        seed=int(state.get("seed", 0)) if state.get("fixed_seed", True) else None,
        sampling_method=state.get("sampling_method", "ras"),
        speed=float(state.get("speed", 1.0)),
    )


def pending_request(session: SynthesisSession) -> SynthesisRequest | None:
    """:func:`request_from_form`, or None while the form is not a valid request."""
    try:
        return request_from_form(session)
    except GlmTtsError:
        return None
