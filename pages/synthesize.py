import tempfile
from pathlib import Path

import streamlit as st

from glmtts.audio import wav_bytes
from glmtts.engines import engine_names, engine_status
from glmtts.errors import GlmTtsError
from glmtts.request import MAX_TEXT_CHARS, SAMPLING_METHODS, SPEED_RANGE, SynthesisRequest
from ui import frame
from ui.cards import memory_card
from ui.state import tts_session

frame.begin()
st.title("🔊 Synthesize")
session = tts_session()
status = engine_status()
st.session_state.setdefault("engine", session.engine_name)
engine_col, note_col = st.columns([1, 2])
engine = engine_col.selectbox(
    "Engine", engine_names(), key="engine",
    format_func=lambda n: n if status[n] is None else f"{n} (unavailable)")
if status[engine] is not None:
    note_col.warning(f"{engine} cannot run here: {status[engine]}")
elif engine != session.engine_name:
    try:
        session.switch_engine(engine)
    except GlmTtsError as exc:
        note_col.error(str(exc))
caps = session.engine.capabilities
defaults = {"text": "Hello! This is the embedded voice. Watch what each synthesis costs in "
                    "memory.",
            "voice_path": "", "sample_rate": caps.native_sample_rate, "use_kv_cache": False,
            "speed": 1.0, "fixed_seed": True, "seed": 42, "sampling_method": "ras"}
for key, value in defaults.items():
    st.session_state.setdefault(key, value)
if st.session_state["sample_rate"] not in caps.sample_rates:
    st.session_state["sample_rate"] = caps.native_sample_rate
if not caps.speech:
    st.warning("This engine is a memory twin: its audio is not speech.")

st.text_area("Text to speak", key="text", height=140, max_chars=MAX_TEXT_CHARS,
             placeholder="Type something to say…")
left, right = st.columns(2)
with left:
    voice_path = st.text_input(
        "Voice", key="voice_path", placeholder="en_US-joe-medium (embedded)",
        help="Leave empty for the embedded voice, or give the path of another Piper .onnx voice",
        disabled=caps.reason("voice") is not None)
with right:
    ref_reason = caps.reason("reference_audio")
    upload = st.file_uploader("Reference voice (prompt audio)",
                              type=["wav", "flac", "ogg", "mp3"], key="ref_audio",
                              disabled=ref_reason is not None,
                              help=ref_reason or "A 2-30 s recording of the voice to clone")
    if ref_reason:
        st.caption(f"Disabled: {ref_reason}.")
    elif upload is not None:
        # Kept on disk (and its path in the session) so that it outlives page switches.
        folder = Path(tempfile.gettempdir()) / "glmtts-uploads" / (session.session_id or "anon")
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / Path(upload.name).name
        saved.write_bytes(upload.getvalue())
        st.session_state["_ref_audio_path"] = str(saved)
    if ref_reason is None and st.session_state.get("_ref_audio_path"):
        st.caption(f"Reference: {Path(st.session_state['_ref_audio_path']).name}")
        st.audio(st.session_state["_ref_audio_path"])
        st.text_input("Transcript of the reference", key="ref_text")

with st.expander("Advanced settings"):
    c1, c2 = st.columns(2)
    with c1:
        rates = list(caps.sample_rates)
        st.selectbox("Sample rate", rates, key="sample_rate",
                     format_func=lambda r: f"{r:,} Hz" + (
                         " (native)" if r == caps.native_sample_rate else " (resampled)"))
        kv_reason = caps.reason("use_kv_cache")
        st.toggle("KV cache (prompt history)", key="use_kv_cache",
                  disabled=kv_reason is not None, help=kv_reason)
        if kv_reason:
            st.caption(f"Disabled: {kv_reason}.")
        st.slider("Speed", SPEED_RANGE[0], SPEED_RANGE[1], step=0.05, key="speed",
                  disabled=caps.reason("speed") is not None)
    with c2:
        st.checkbox("Fixed seed", key="fixed_seed",
                    help="Same seed, same text, same settings: the same audio")
        st.number_input("Seed", 0, 2**31 - 1, key="seed",
                        disabled=not st.session_state.get("fixed_seed", True))
        sm_reason = caps.reason("sampling_method")
        st.radio("Sampling method", SAMPLING_METHODS, key="sampling_method", horizontal=True,
                 disabled=sm_reason is not None, help=sm_reason)
        if sm_reason:
            st.caption(f"Disabled: {sm_reason}.")

if st.button("Synthesize", key="synthesize", type="primary",
             disabled=status[engine] is not None):
    try:
        wanted = (voice_path.strip() or None) if caps.reason("voice") is None else None
        if wanted != session.engine_options.get("voice"):
            session.switch_engine(session.engine_name, {"voice": wanted} if wanted else {})
        request = SynthesisRequest(
            text=st.session_state.get("text", ""),
            voice=wanted,
            reference_audio=(st.session_state.get("_ref_audio_path")
                             if ref_reason is None else None),
            reference_text=st.session_state.get("ref_text") if ref_reason is None else None,
            sample_rate=int(st.session_state["sample_rate"]),
            use_kv_cache=bool(st.session_state.get("use_kv_cache", False)),
            seed=int(st.session_state["seed"]) if st.session_state.get("fixed_seed", True)
            else None,
            sampling_method=st.session_state.get("sampling_method", "ras"),
            speed=float(st.session_state.get("speed", 1.0)),
        )
        with st.spinner("Synthesizing…" if session.loaded else "Loading the model, then "
                                                                "synthesizing…"):
            outcome = session.synthesize(request)
        st.session_state["_last_audio"] = wav_bytes(outcome.result.audio,
                                                    outcome.result.sample_rate)
        if outcome.auto_cleanup is not None:
            done = outcome.auto_cleanup
            st.info(f"Auto policy ran a {done.level} cleanup first "
                    f"({outcome.recommendation.summary if outcome.recommendation else ''}); "
                    f"it took {done.duration_s:.2f} s.", icon="🧭")
        if outcome.recovery:
            st.warning(outcome.recovery, icon="♻️")
        for note in request.notes:
            st.info(note)
    except GlmTtsError as exc:  # bad input, voice or device; out of memory even after retry
        st.error(str(exc))

outcome = session.last
if outcome is not None and "_last_audio" in st.session_state:
    st.audio(st.session_state["_last_audio"], format="audio/wav")
    st.download_button("Download WAV", st.session_state["_last_audio"],
                       file_name=f"tts-{outcome.record.event_id[:8]}.wav", mime="audio/wav",
                       key="download")
    meta = outcome.result.metadata
    st.caption(f"{outcome.result.duration_s:.2f} s at {outcome.result.sample_rate:,} Hz · "
               f"seed {meta.get('seed')} · {meta.get('sentences')} sentence(s) · "
               f"{meta.get('device')}")
    memory_card(outcome)

frame.end()
