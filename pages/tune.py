import statistics
import time

import pandas as pd
import streamlit as st

from glmtts.engines import engine_names, engine_status
from glmtts.engines.twin import CPU_SCALE
from glmtts.errors import GlmTtsError
from glmtts.sweep import (
    DEFAULT_TEXTS,
    GIB,
    SweepSpec,
    plan_sweep,
    rank_configurations,
    run_sweep,
    sweep_figures,
)
from ui import frame
from ui.form_memory import KEEP
from ui.format import fmt_bytes, fmt_seconds
from ui.state import app_resources

RATES = [24000, 32000]
SWITCH = {"off": False, "on": True}

def _seconds_per_char(engine_name: str) -> float | None:
    """Median wall seconds per character of this engine's stored syntheses (None: none)."""
    events = app_resources().store.events(kind="synthesis", last=200)
    if not len(events):
        return None
    rates = [row["duration_s"] / row["features"]["text_chars"] for _, row in events.iterrows()
             if isinstance(row.get("features"), dict)
             and row["features"].get("engine") == engine_name
             and row["features"].get("text_chars") and row.get("ok")]
    return float(statistics.median(rates)) if rates else None


frame.begin()
st.title("🎛️ Tune")
st.caption("Sweep GLM-TTS's KV-cache switch, the sample rate and the text length; every point "
           "is a measured synthesis. See which configurations fit your memory, best first.")
status = engine_status()
defaults = {"tune_engine": "twin" if "twin" in status else engine_names()[0],
            "tune_scale": CPU_SCALE, "tune_dtypes": ["fp32"], "tune_attention": ["on"],
            "tune_rates": RATES, "tune_kv": ["off", "on"], "tune_texts": "\n".join(DEFAULT_TEXTS),
            "tune_budget": 2.0, "tune_device": "cpu"}
for key, value in defaults.items():
    st.session_state.setdefault(key, value)

left, right = st.columns([1, 2])
engine = left.selectbox("Engine", engine_names(), key="tune_engine", **KEEP,
                        format_func=lambda n: n if status[n] is None else f"{n} (unavailable)")
left.selectbox("Device", ["cpu", "auto", "cuda"], key="tune_device", **KEEP,
               help="auto: the GPU where there is one")
left.number_input("Memory budget (GiB)", 0.1, 1024.0, step=0.5, key="tune_budget", **KEEP)
if engine == "twin":
    right.info("The twin has GLM-TTS's layer shapes with random weights, driven to realistic "
               "lengths: its memory behaves like GLM-TTS's, but **its audio is not speech**. "
               "Two different things are called KV cache: the *KV switch* is GLM-TTS's "
               "prompt-history cache (earlier segments prompt later ones: longer prompts, more "
               "memory); the *attention cache* is the transformer's own key/value cache (off: "
               "every step recomputes the whole sequence).", icon="ℹ️")
    c1, c2, c3 = right.columns(3)
    c1.number_input("Scale", 0.01, 1.0, step=0.01, key="tune_scale", **KEEP,
                    help="1.0 is GLM-TTS's size (~8 GiB in fp32); small scales run on a CPU")
    c2.multiselect("Dtype", ["fp32", "bf16"], key="tune_dtypes", **KEEP)
    c3.multiselect("Attention cache", list(SWITCH), key="tune_attention", **KEEP)
c1, c2 = st.columns(2)
c1.multiselect("Sample rates", RATES, key="tune_rates", **KEEP,
               format_func=lambda r: f"{r / 1000:g} kHz")
c2.multiselect("KV switch (prompt history)", list(SWITCH), key="tune_kv", **KEEP)
st.text_area("Texts, one per line (their lengths are the x axis)", key="tune_texts", **KEEP,
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
    st.warning(f"{engine} cannot run here: {status[engine]}")
else:
    try:
        points, notes = plan_sweep(spec)
        for note in notes:
            st.caption(f"• {note}")
        estimate = _seconds_per_char(engine)
        total_chars = sum(len(p.text) for p in points)
        st.caption(f"{len(points)} point(s) to run" + (
            f", about {fmt_seconds(estimate * total_chars)} (from this engine's earlier "
            f"syntheses here, model loads not counted)." if estimate else
            ": no earlier synthesis of this engine here to estimate the time from; the bar "
            "shows an estimate once the first points have run."))
    except GlmTtsError as exc:
        st.error(str(exc))

if st.button("Run sweep", key="tune_run", type="primary", disabled=not points):
    bar = st.progress(0.0, text="Loading the model and warming it up (one short synthesis per "
                                "rate, not reported)…")
    started = time.monotonic()
    chars_done = 0

    def report(done: int, total: int, point) -> None:
        global chars_done
        elapsed = time.monotonic() - started
        if point is None:
            bar.progress(1.0, text=f"Done in {fmt_seconds(elapsed)}.")
            return
        left_chars = sum(len(p.text) for p in points[done:])
        eta = (f" · about {fmt_seconds(elapsed / chars_done * left_chars)} left"
               if chars_done else "")
        bar.progress(done / total if total else 1.0, text=(
            f"{done + 1}/{total}: {len(point.text)} characters, "
            f"{point.sample_rate or 'native'} Hz, KV {'on' if point.use_kv_cache else 'off'} · "
            f"{fmt_seconds(elapsed)} elapsed{eta}"))
        chars_done += len(point.text)

    resources = app_resources()
    try:
        result = run_sweep(spec, store=resources.store, sampler=resources.sampler,
                           progress=report)
        st.session_state["_tune_result"] = result
    except GlmTtsError as exc:
        st.error(str(exc))

result = st.session_state.get("_tune_result")
if result is not None and len(result.frame):
    data = result.frame
    for note in result.notes:
        st.caption(f"• {note}")
    ranked = rank_configurations(data, budget)
    fits = ranked[ranked["fits"]]
    st.subheader(f"Configurations that fit in {fmt_bytes(budget)}, best first")
    if fits.empty:
        st.warning("None of the configurations fits in this budget.")
    else:
        st.dataframe(pd.DataFrame({
            "configuration": fits["configuration"],
            "needs": fits["need_bytes"].map(fmt_bytes),
            "from": fits["need_source"],
            "predicted": fits["predicted_bytes"].map(fmt_bytes),
            "mean latency": fits["latency_s"].map(fmt_seconds),
        }), hide_index=True, key="tune_fits")
    st.caption("Needs: the largest peak over the texts, above the memory in use before the "
               "model was loaded (weights included). On a GPU: torch's reserved pool; on the "
               "CPU: host RSS.")
    for name, figure in sweep_figures(data).items():
        st.plotly_chart(figure, key=f"tune_chart_{name}")
    st.download_button("Download CSV", data.to_csv(index=False).encode(),
                       file_name="sweep.csv", mime="text/csv", key="tune_download")

frame.end()
