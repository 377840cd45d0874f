import statistics
import time

import pandas as pd
import streamlit as st

from glmtts.device import cuda_unavailable_reason, resolve_device
from glmtts.engines import engine_names, engine_status
from glmtts.engines.twin import CPU_SCALE
from glmtts.errors import GlmTtsError
from glmtts.sweep import (
    CPU_TEXTS,
    DEFAULT_TEXTS,
    GIB,
    WARMUP_TEXT,
    SweepSpec,
    plan_sweep,
    rank_configurations,
    run_sweep,
    sweep_figures,
)
from monitoring.i18n import N_, _, ngettext, say
from ui import frame
from ui.form_memory import KEEP
from ui.format import fmt_bytes, fmt_seconds
from ui.language import speaking_now
from ui.state import app_resources

RATES = [24000, 32000]
SWITCH = {"off": False, "on": True}
SWITCH_WORDS = {"off": N_("off"), "on": N_("on")}
DEVICE_WORDS = {"cpu": "cpu", "auto": N_("auto"), "cuda": "cuda"}

#: Seconds per character where this app has no synthesis of the engine on that device on
#: record yet: the twin at its CPU scale on a 2-core CPU. Said to be a guess where used.
GUESS_S_PER_CHAR = {("twin", "cpu"): 0.03}


def _seconds_per_char(engine_name: str, device: str) -> float | None:
    """Median wall seconds per character of this engine's stored syntheses on ``device``
    (None: none)."""
    events = app_resources().store.events(kind="synthesis", last=200)
    if not len(events):
        return None
    rates = [row["duration_s"] / row["features"]["text_chars"] for _, row in events.iterrows()
             if isinstance(row.get("features"), dict)
             and row["features"].get("engine") == engine_name
             and str(row["features"].get("device") or device).split(":")[0] == device
             and row["features"].get("text_chars") and row.get("ok")]
    return float(statistics.median(rates)) if rates else None


def _chars_to_speak(points: list) -> int:
    """Characters the sweep synthesizes: its points, and one warm-up per output rate after
    each model load."""
    warmups = {(p.options, p.sample_rate) for p in points}
    return sum(len(p.text) for p in points) + len(warmups) * len(WARMUP_TEXT)


def _time_estimate(engine_name: str, device: str, points: list) -> str:
    """The sentence that says how long the sweep will take, and from what."""
    try:
        where = resolve_device(device)
    except GlmTtsError:
        where = device
    where = "cpu" if where == "cpu" else "cuda"
    measured = _seconds_per_char(engine_name, where)
    chars = _chars_to_speak(points)
    if measured is not None:
        return _(", about {time} (from this engine's earlier syntheses here; model loads not "
                 "counted).").format(time=fmt_seconds(measured * chars))
    guess = GUESS_S_PER_CHAR.get((engine_name, where))
    if guess is not None:
        return _(", about {time} (a guess from a 2-core CPU: no synthesis of this engine on "
                 "record here yet; the bar refines it as points finish).").format(
            time=fmt_seconds(guess * chars))
    return _(": no earlier synthesis of this engine here to estimate the time from; the bar "
             "shows an estimate once the first points have run.")


frame.begin()
st.title(_("🎛️ Tune"))
st.caption(_("Sweep GLM-TTS's KV-cache switch, the sample rate and the text length; every "
             "point is a measured synthesis. See which configurations fit your memory, best "
             "first."))
status = engine_status()
# Without a GPU, shorter default texts: the default sweep ends within a minute on 2 cores.
gpu = cuda_unavailable_reason() is None
defaults = {"tune_engine": "twin" if "twin" in status else engine_names()[0],
            "tune_scale": CPU_SCALE, "tune_dtypes": ["fp32"], "tune_attention": ["on"],
            "tune_rates": RATES, "tune_kv": ["off", "on"],
            "tune_texts": "\n".join(DEFAULT_TEXTS if gpu else CPU_TEXTS),
            "tune_budget": 2.0, "tune_device": "auto" if gpu else "cpu"}
for key, value in defaults.items():
    st.session_state.setdefault(key, value)

left, right = st.columns([1, 2])
engine = left.selectbox(_("Engine"), engine_names(), key="tune_engine", **KEEP,
                        format_func=speaking_now(lambda n: n if status[n] is None
                        else _("{engine} (unavailable)").format(engine=n)))
left.selectbox(_("Device"), ["cpu", "auto", "cuda"], key="tune_device", **KEEP,
               format_func=speaking_now(lambda d: _(DEVICE_WORDS[d])),
               help=_("auto: the GPU where there is one"))
left.number_input(_("Memory budget (GiB)"), 0.1, 1024.0, step=0.5, key="tune_budget", **KEEP)
if engine == "twin":
    right.info(_("The twin has GLM-TTS's layer shapes with random weights, driven to "
                 "realistic lengths: its memory behaves like GLM-TTS's, but **its audio is not "
                 "speech**. Two different things are called KV cache: the *KV switch* is "
                 "GLM-TTS's prompt-history cache (earlier segments prompt later ones: longer "
                 "prompts, more memory); the *attention cache* is the transformer's own "
                 "key/value cache (off: every step recomputes the whole sequence)."), icon="ℹ️")
    c1, c2, c3 = right.columns(3)
    c1.number_input(_("Scale"), 0.01, 1.0, step=0.01, key="tune_scale", **KEEP,
                    help=_("1.0 is GLM-TTS's size (~8 GiB in fp32); small scales run on a CPU"))
    c2.multiselect(_("Dtype"), ["fp32", "bf16"], key="tune_dtypes", **KEEP)
    c3.multiselect(_("Attention cache"), list(SWITCH), key="tune_attention", **KEEP,
                   format_func=speaking_now(lambda v: _(SWITCH_WORDS[v])))
c1, c2 = st.columns(2)
c1.multiselect(_("Sample rates"), RATES, key="tune_rates", **KEEP,
               format_func=lambda r: f"{r / 1000:g} kHz")
c2.multiselect(_("KV switch (prompt history)"), list(SWITCH), key="tune_kv", **KEEP,
               format_func=speaking_now(lambda v: _(SWITCH_WORDS[v])))
st.text_area(_("Texts, one per line (their lengths are the x axis)"), key="tune_texts", **KEEP,
             height=120)

twin = engine == "twin"
spec = SweepSpec(
    engine=engine,
    texts=tuple(t.strip() for t in st.session_state["tune_texts"].splitlines() if t.strip()),
    sample_rates=tuple(st.session_state["tune_rates"]),
    kv=tuple(SWITCH[v] for v in st.session_state["tune_kv"]),
    dtypes=tuple(st.session_state["tune_dtypes"]) if twin else ("fp32",),
    attention_cache=tuple(SWITCH[v] for v in st.session_state["tune_attention"]) if twin
    else (True,),
    scale=float(st.session_state["tune_scale"]) if twin else None,
    device=st.session_state["tune_device"],
)
budget = int(float(st.session_state["tune_budget"]) * GIB)
points: list = []
if status[engine] is not None:
    st.warning(_("{engine} cannot run here: {reason}").format(engine=engine,
                                                               reason=say(status[engine])))
else:
    try:
        points, notes = plan_sweep(spec)
        for note in notes:
            st.caption(f"• {say(note)}")
        st.caption(ngettext("{count} point(s) to run", "{count} point(s) to run",
                            len(points)).format(count=len(points))
                   + _time_estimate(engine, spec.device, points))
    except GlmTtsError as exc:
        st.error(say(exc))

if st.button(_("Run sweep"), key="tune_run", type="primary", disabled=not points):
    bar = st.progress(0.0, text=_("Loading the model and warming it up (one short synthesis "
                                  "per rate, not reported)…"))
    started = time.monotonic()
    chars_done = 0
    points_from: float | None = None  # when the first point began (after load and warm-up)

    def report(done: int, total: int, point) -> None:
        global chars_done, points_from
        now = time.monotonic()
        elapsed = now - started
        if point is None:
            bar.progress(1.0, text=_("Done in {time}.").format(time=fmt_seconds(elapsed)))
            return
        if points_from is None:
            points_from = now
        left_chars = sum(len(p.text) for p in points[done:])
        # the pace of the points run so far (model load and warm-up left out)
        eta = (_(" · about {time} left").format(
            time=fmt_seconds((now - points_from) / chars_done * left_chars))
            if chars_done else "")
        bar.progress(done / total if total else 1.0, text=_(
            "{number}/{total}: {chars} characters, {rate} Hz, KV {kv} · {time} elapsed{eta}"
        ).format(number=done + 1, total=total, chars=len(point.text),
                 rate=point.sample_rate or _("native"),
                 kv=_("on") if point.use_kv_cache else _("off"),
                 time=fmt_seconds(elapsed), eta=eta))
        chars_done += len(point.text)

    resources = app_resources()
    try:
        result = run_sweep(spec, store=resources.store, sampler=resources.sampler,
                           progress=report)
        st.session_state["_tune_result"] = result
    except GlmTtsError as exc:
        st.error(say(exc))

result = st.session_state.get("_tune_result")
if result is not None and len(result.frame):
    data = result.frame
    for note in result.notes:
        st.caption(f"• {say(note)}")
    ranked = rank_configurations(data, budget)
    fits = ranked[ranked["fits"]]
    st.subheader(_("Configurations that fit in {size}, best first").format(
        size=fmt_bytes(budget)))
    if fits.empty:
        st.warning(_("None of the configurations fits in this budget."))
    else:
        st.dataframe(pd.DataFrame({
            _("configuration"): fits["configuration"].map(say),
            _("needs"): fits["need_bytes"].map(fmt_bytes),
            _("from"): fits["need_source"],
            _("predicted"): fits["predicted_bytes"].map(fmt_bytes),
            _("mean latency"): fits["latency_s"].map(fmt_seconds),
        }), hide_index=True, key="tune_fits")
    st.caption(_("Needs: the largest peak over the texts, above the memory in use before the "
                 "model was loaded (weights included). On a GPU: torch's reserved pool; on the "
                 "CPU: host RSS."))
    for name, figure in sweep_figures(data).items():
        st.plotly_chart(figure, key=f"tune_chart_{name}")
    st.download_button(_("Download CSV"), data.to_csv(index=False).encode(),
                       file_name="sweep.csv", mime="text/csv", key="tune_download")

frame.end()
