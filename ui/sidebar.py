"""The sidebar on every page: device card, model state, and the 🧹 cleanup button."""

from __future__ import annotations

import streamlit as st

from glmtts.device import cuda_unavailable_reason
from glmtts.outcome import CleanupOption
from glmtts.registry import loaded_models
from monitoring import Snapshot, take_snapshot
from monitoring.policy import MODES, Recommendation
from ui.form_memory import KEEP
from ui.format import fmt_bytes, fmt_seconds
from ui.request_form import pending_request
from ui.state import app_resources, tts_session

CLEANUP_LEVELS = {
    "full": "Full: unload this session's model, then light (next synthesis reloads)",
    "light": "Light: gc, empty the CUDA cache, malloc_trim (model stays loaded)",
    "restart": "Restart: end the engine's worker process; frees everything it held, the CUDA "
               "context included (next synthesis starts a worker and reloads)",
}


def current_snapshot() -> Snapshot:
    """The sampler's newest reading, or a fresh one before its first."""
    return app_resources().sampler.latest() or take_snapshot()


def _run_cleanup() -> None:
    """on_click: runs before the rerun, and touches nothing but its own result."""
    level = st.session_state.get("cleanup_level", "full")
    st.session_state["_last_cleanup"] = tts_session().cleanup(level)


def device_card(snap: Snapshot) -> None:
    if snap.gpu_index is not None and snap.nvml_device_total_bytes:
        gpu = next((g for g in snap.gpus if g.index == snap.gpu_index), None)
        st.markdown(f"**GPU {snap.gpu_index}: {gpu.name if gpu else 'NVIDIA GPU'}**")
        used, total = snap.nvml_device_used_bytes or 0, snap.nvml_device_total_bytes
        st.progress(min(1.0, used / total),
                    text=f"{fmt_bytes(used)} / {fmt_bytes(total)} used (device-wide, NVML)")
        if snap.nvml_process_used_bytes is not None:
            st.caption(f"this process: {fmt_bytes(snap.nvml_process_used_bytes)} (NVML)")
    else:
        reason = snap.nvml_reason or cuda_unavailable_reason() or "no NVIDIA GPU found"
        st.markdown("**No GPU: showing host memory**")
        st.caption(f"Why: {reason}")
    if snap.host_rss_bytes is not None:
        avail = snap.system_available_bytes
        st.caption(f"host RSS {fmt_bytes(snap.host_rss_bytes)}"
                   + (f" · RAM available {fmt_bytes(avail)}" if avail is not None else ""))


def model_state() -> None:
    session = tts_session()
    engine = session.engine
    where = ""
    if session.isolated:
        pid = getattr(engine, "pid", None)
        where = f" in worker pid {pid}" if pid else " (its worker is not running)"
    if engine.loaded:
        st.markdown(f"**Model:** {session.engine_name} loaded on `{engine.device}`{where}, "
                    f"{fmt_bytes(engine.model_bytes())} of weights")
    else:
        st.markdown(f"**Model:** {session.engine_name} not loaded (loads on next synthesis)")
    models = loaded_models()
    if len(models) > 1:
        total = sum(m.weights_bytes or 0 for m in models)
        st.caption(f"{len(models)} models in this process (one per browser session), "
                   f"{fmt_bytes(total)} of weights in all")


def _option_line(option: CleanupOption) -> str:
    frees = ("frees " + ("about " if option.level != "restart" else "")
             + fmt_bytes(option.frees_bytes)) if option.frees_bytes is not None else "frees"
    cost = ("costs nothing" if option.cost_s == 0 else
            f"coming back costs {fmt_seconds(option.cost_s)}" if option.cost_s is not None
            else "coming back costs a reload (not measured yet)")
    return f"**{option.level}**: {frees} ({option.frees}); {cost}"


def cleanup_controls() -> None:
    session = tts_session()
    options = session.cleanup_options()
    levels = [o.level for o in options]
    if st.session_state.get("cleanup_level") not in levels:
        st.session_state["cleanup_level"] = "full"
    st.radio("Cleanup", levels, key="cleanup_level", **KEEP,
             format_func=lambda k: CLEANUP_LEVELS[k].split(":")[0],
             help="\n\n".join(CLEANUP_LEVELS[k] for k in levels), horizontal=True)
    st.caption("  \n".join(_option_line(o) for o in options))
    st.button("🧹 Clear memory", key="cleanup_button", on_click=_run_cleanup,
              width="stretch")
    result = st.session_state.get("_last_cleanup")
    if result is not None:
        freed = {
            "host RSS": result.host_rss_freed_bytes,
            "torch allocated": result.torch_allocated_freed_bytes,
            "torch reserved": result.torch_reserved_freed_bytes,
            "GPU (NVML, process)": result.nvml_process_freed_bytes,
        }
        parts = [f"{k} {fmt_bytes(v)}" for k, v in freed.items() if v is not None]
        where = ""
        if result.details.get("worker_pid"):
            where = f" in worker pid {result.details['worker_pid']}"
            left = result.details.get("upstream_modules_left")
            if left is not None and session.engine_name == "glm-tts":
                where += f" ({left} upstream modules left)"
        st.success(f"{result.level.capitalize()} cleanup{where} freed " + ", ".join(parts)
                   + f" in {fmt_seconds(result.duration_s)}", icon="🧹")


MODE_HELP = {
    "advise": "recommend only",
    "auto": "run a required cleanup before the synthesis (recorded)",
    "off": "no recommendations",
}
_BOX = {"info": st.info, "advised": st.warning, "required": st.error}


def _apply_recommendation() -> None:
    action = st.session_state.get("_policy_action")
    if action in ("light", "full", "restart"):
        st.session_state["_last_cleanup"] = tts_session().cleanup(action)


def _advice(session, mode: str) -> Recommendation:
    """The policy's advice on the form's request, computed once per event: again only after
    a synthesis, a load or a cleanup (the session's history grew), or when the request, the
    engine or the mode changed; a plain rerun (typing, a page switch, the live chart) reuses
    it and never walks the CUDA allocator's segments."""
    request = pending_request(session)
    key = (id(session), session.events_recorded, id(session.engine), request, mode)
    cached = st.session_state.get("_advice")
    if cached is not None and cached[0] == key:
        return cached[1]
    rec = session.recommend(request, record=False)
    st.session_state["_advice"] = (key, rec)
    return rec


def policy_box() -> None:
    session = tts_session()
    st.session_state.setdefault("policy_mode", session.policy_mode)
    mode = st.radio("Cleanup policy", MODES, key="policy_mode", **KEEP, horizontal=True,
                    help="\n\n".join(f"**{m}**: {h}" for m, h in MODE_HELP.items()))
    session.policy_mode = mode
    if mode == "off":
        return
    rec = _advice(session, mode)
    _BOX[rec.urgency](rec.summary, icon="🧭")
    with st.expander("Why"):
        for reason in rec.reasons:
            st.markdown(f"- **{reason.rule}** ({reason.urgency}): {reason.text}")
        figures = {
            "predicted peak": fmt_bytes(rec.predicted_peak_bytes),
            "upper bound": fmt_bytes(rec.predicted_peak_upper_bytes),
            "needed": fmt_bytes(rec.needed_bytes),
            "headroom": fmt_bytes(rec.headroom_bytes),
            "light cleanup frees": fmt_bytes(rec.light_frees_bytes),
            "full cleanup frees": fmt_bytes(rec.full_frees_bytes),
            "reload cost": fmt_seconds(rec.reload_cost_s),
        }
        st.caption(" · ".join(f"{k}: {v}" for k, v in figures.items()))
    st.session_state["_policy_action"] = rec.action
    if rec.action != "none":
        st.button(f"Apply: {rec.action} cleanup", key="policy_apply",
                  on_click=_apply_recommendation, width="stretch")


def render_sidebar() -> None:
    with st.sidebar:
        device_card(current_snapshot())
        model_state()
        st.divider()
        policy_box()
        st.divider()
        cleanup_controls()
