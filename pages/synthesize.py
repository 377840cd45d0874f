import tempfile
from pathlib import Path

import streamlit as st

from glmtts.audio import wav_bytes
from glmtts.errors import GlmTtsError
from glmtts.reference_audio import ReferenceAudioError, load_reference, supported_formats
from glmtts.request import MAX_TEXT_CHARS, SAMPLING_METHODS, SPEED_RANGE
from glmtts.say import message_of
from glmtts.stream import streaming
from monitoring.i18n import _, say
from monitoring.policy.recommendation import word
from ui import frame
from ui.cards import memory_card
from ui.engine_choice import engine_choice
from ui.form_memory import KEEP
from ui.language import speaking_now
from ui.live_audio import LivePlayer
from ui.request_form import request_from_form
from ui.state import tts_session

frame.begin()
st.title(_("🔊 Synthesize"))
session = tts_session()
blocked = engine_choice(session)
caps = session.engine.capabilities
# the default text stays English in every UI language: the embedded voice speaks English
defaults = {"text": "Hello! This is the embedded voice. Watch what each synthesis costs in "
                    "memory.",
            "sample_rate": caps.native_sample_rate, "use_kv_cache": False,
            "speed": 1.0, "fixed_seed": True, "seed": 42, "sampling_method": "ras"}
for key, value in defaults.items():
    st.session_state.setdefault(key, value)
if st.session_state["sample_rate"] not in caps.sample_rates:
    st.session_state["sample_rate"] = caps.native_sample_rate
if not caps.speech:
    st.warning(_("This engine is a memory twin: its audio is not speech."))

st.text_area(_("Text to speak"), key="text", **KEEP, height=140, max_chars=MAX_TEXT_CHARS,
             placeholder=_("Type something to say…"))
left, right = st.columns(2)
with right:
    ref_reason = caps.reason("reference_audio")
    upload = st.file_uploader(_("Reference voice (prompt audio)"),
                              type=[f.lower() for f in supported_formats()], key="ref_audio",
                              disabled=ref_reason is not None,
                              help=_(ref_reason) if ref_reason
                              else _("A 2-30 s recording of the voice to clone"))
    if ref_reason:
        st.caption(_("Disabled: {reason}.").format(reason=_(ref_reason)))
    elif upload is not None and st.session_state.get("_ref_upload_id") != upload.file_id:
        # Saved and checked once per upload (not on every rerun); kept on disk, its path in
        # the session, so that it outlives page switches.
        st.session_state["_ref_upload_id"] = upload.file_id
        folder = Path(tempfile.gettempdir()) / "glmtts-uploads" / (session.session_id or "anon")
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / Path(upload.name).name
        saved.write_bytes(upload.getvalue())
        try:
            ref = load_reference(saved)
        except ReferenceAudioError as exc:
            st.session_state["_ref_error"] = message_of(exc)
            st.session_state.pop("_ref_audio_path", None)
        else:
            st.session_state.pop("_ref_error", None)
            st.session_state["_ref_audio_path"] = str(saved)
            st.session_state["_ref_summary"] = ref.summary()
            st.session_state["_ref_preview"] = ref.preview_wav()
    if ref_reason is None and st.session_state.get("_ref_error"):
        st.error(say(st.session_state["_ref_error"]))
    if ref_reason is None and st.session_state.get("_ref_audio_path"):
        st.caption(_("Reference: {name} · {summary}").format(
            name=Path(st.session_state["_ref_audio_path"]).name,
            summary=say(st.session_state.get("_ref_summary", ""))))
        st.audio(st.session_state["_ref_preview"], format="audio/wav")
        st.text_input(_("Transcript of the reference (required)"), key="ref_text", **KEEP)

with st.expander(_("Advanced settings")):
    c1, c2 = st.columns(2)
    with c1:
        rates = list(caps.sample_rates)
        st.selectbox(_("Sample rate"), rates, key="sample_rate", **KEEP,
                     format_func=speaking_now(lambda r: f"{r:,} Hz" + (
                         _(" (native)") if r == caps.native_sample_rate else "")))
        kv_reason = caps.reason("use_kv_cache")
        st.toggle(_("KV cache (prompt history)"), key="use_kv_cache", **KEEP,
                  disabled=kv_reason is not None, help=kv_reason and _(kv_reason))
        if kv_reason:
            st.caption(_("Disabled: {reason}.").format(reason=_(kv_reason)))
        st.slider(_("Speed"), SPEED_RANGE[0], SPEED_RANGE[1], step=0.05, key="speed", **KEEP,
                  disabled=caps.reason("speed") is not None)
    with c2:
        st.checkbox(_("Fixed seed"), key="fixed_seed", **KEEP,
                    help=_("Same seed, same text, same settings: the same audio"))
        st.number_input(_("Seed"), 0, 2**31 - 1, key="seed", **KEEP,
                        disabled=not st.session_state.get("fixed_seed", True))
        sm_reason = caps.reason("sampling_method")
        st.radio(_("Sampling method"), SAMPLING_METHODS, key="sampling_method", **KEEP,
                 horizontal=True, disabled=sm_reason is not None,
                 help=sm_reason and _(sm_reason))
        if sm_reason:
            st.caption(_("Disabled: {reason}.").format(reason=_(sm_reason)))

if st.button(_("Synthesize"), key="synthesize", type="primary",
             disabled=blocked is not None):
    live = None
    try:
        request = request_from_form(session)  # the sidebar advised on this same request
        with st.spinner(_("Synthesizing…") if session.loaded
                        else _("Loading the model, then synthesizing…")):
            live = LivePlayer()  # sentence by sentence: progress, and the first ones play
            with streaming(live.listener, live.progress):
                outcome = session.synthesize(request)
        live.finish(outcome.result.audio, outcome.result.sample_rate)
        st.session_state["_last_audio"] = wav_bytes(outcome.result.audio,
                                                    outcome.result.sample_rate)
        st.session_state["_first_audio"] = (outcome.record.event_id, live.first_audio_s,
                                            live.whole_s)
        if outcome.auto_cleanup is not None:
            done = outcome.auto_cleanup
            st.info(_("Auto policy ran a {level} cleanup first ({summary}); it took "
                      "{seconds} s.").format(
                level=word(done.level), seconds=f"{done.duration_s:.2f}",
                summary=outcome.recommendation.summary if outcome.recommendation else ""),
                icon="🧭")
        if outcome.recovery:
            st.warning(say(outcome.recovery), icon="♻️")
        for note in request.notes:
            st.info(say(note))
    except GlmTtsError as exc:  # bad input, voice or device; out of memory even after retry
        if live is not None:
            live.abandon()
        st.error(say(exc))

outcome = session.last
if outcome is not None and "_last_audio" in st.session_state:
    st.audio(st.session_state["_last_audio"], format="audio/wav")
    st.download_button(_("Download WAV"), st.session_state["_last_audio"],
                       file_name=f"tts-{outcome.record.event_id[:8]}.wav", mime="audio/wav",
                       key="download")
    meta = outcome.result.metadata
    st.caption(_("{seconds} s at {rate} Hz · seed {seed} · {sentences} sentence(s) · "
                 "{device}").format(seconds=f"{outcome.result.duration_s:.2f}",
                                    rate=f"{outcome.result.sample_rate:,}",
                                    seed=meta.get("seed"), sentences=meta.get("sentences"),
                                    device=meta.get("device")))
    first = st.session_state.get("_first_audio")
    if first is None or first[0] != outcome.record.event_id:
        first = (None, None, None)
    memory_card(outcome, first_audio_s=first[1], whole_s=first[2])

frame.end()
