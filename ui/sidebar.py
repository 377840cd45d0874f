"""The sidebar on every page: device card, model state, and the 🧹 cleanup button."""

from __future__ import annotations

import streamlit as st

from glmtts.device import cuda_unavailable_reason
from glmtts.outcome import CleanupOption
from glmtts.registry import loaded_models
from monitoring import Snapshot, i18n, take_snapshot
from monitoring.i18n import N_, _, say
from monitoring.policy import MODES, Recommendation
from monitoring.policy.recommendation import word
from ui import language
from ui.form_memory import KEEP
from ui.format import fmt_bytes, fmt_seconds
from ui.idle import idle_controls
from ui.language import speaking_now
from ui.request_form import pending_request
from ui.state import app_resources, tts_session

CLEANUP_LEVELS = {
    "full": (N_("Full"), N_("unload this session's model, then light (next synthesis "
                            "reloads)")),
    "light": (N_("Light"), N_("gc, empty the CUDA cache, malloc_trim (model stays loaded)")),
    "restart": (N_("Restart"), N_("end the engine's worker process; frees everything it held, "
                                  "the CUDA context included (next synthesis starts a worker "
                                  "and reloads)")),
}
#: What each level frees, as the session words it (:meth:`SynthesisSession.cleanup_options`),
#: marked here for the catalog.
OPTION_WORDS = (
    N_("the allocator's unused cache"),
    N_("freed memory the C allocator keeps (an estimate)"),
    N_("the model's weights and caches"),
    N_("the model's weights and caches and the allocator's cache"),
    N_("everything the worker holds: host RSS"),
    N_("everything the worker holds: host RSS, GPU memory (NVML) with the CUDA context"),
)


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
                    text=_("{used} / {total} used (device-wide, NVML)").format(
                        used=fmt_bytes(used), total=fmt_bytes(total)))
        if snap.nvml_process_used_bytes is not None:
            st.caption(_("this process: {size} (NVML)").format(
                size=fmt_bytes(snap.nvml_process_used_bytes)))
    else:
        reason = say(snap.nvml_reason or cuda_unavailable_reason()) or _("no NVIDIA GPU found")
        st.markdown(_("**No GPU: showing host memory**"))
        st.caption(_("Why: {reason}").format(reason=reason))
    if snap.host_rss_bytes is not None:
        avail = snap.system_available_bytes
        st.caption(_("host RSS {size}").format(size=fmt_bytes(snap.host_rss_bytes))
                   + (_(" · RAM available {size}").format(size=fmt_bytes(avail))
                      if avail is not None else ""))


def model_state() -> None:
    session = tts_session()
    engine = session.engine
    where = ""
    if session.isolated:
        pid = getattr(engine, "pid", None)
        where = (_(" in worker pid {pid}").format(pid=pid) if pid
                 else _(" (its worker is not running)"))
    if engine.loaded:
        st.markdown(_("**Model:** {engine} loaded on `{device}`{where}, {size} of weights")
                    .format(engine=session.engine_name, device=engine.device, where=where,
                            size=fmt_bytes(engine.model_bytes())))
    else:
        st.markdown(_("**Model:** {engine} not loaded (loads on next synthesis)")
                    .format(engine=session.engine_name))
    models = loaded_models()
    if len(models) > 1:
        total = sum(m.weights_bytes or 0 for m in models)
        st.caption(_("{count} models in this process (one per browser session), {size} of "
                     "weights in all").format(count=len(models), size=fmt_bytes(total)))


def _option_line(option: CleanupOption) -> str:
    if option.frees_bytes is None:
        frees = _("frees")
    elif option.level != "restart":
        frees = _("frees about {size}").format(size=fmt_bytes(option.frees_bytes))
    else:
        frees = _("frees {size}").format(size=fmt_bytes(option.frees_bytes))
    cost = (_("costs nothing") if option.cost_s == 0 else
            _("coming back costs {time}").format(time=fmt_seconds(option.cost_s))
            if option.cost_s is not None
            else _("coming back costs a reload (not measured yet)"))
    return _("**{level}**: {frees} ({what}); {cost}").format(
        level=word(option.level), frees=frees, what=_(option.frees), cost=cost)


def cleanup_controls() -> None:
    session = tts_session()
    options = session.cleanup_options()
    levels = [o.level for o in options]
    if st.session_state.get("cleanup_level") not in levels:
        st.session_state["cleanup_level"] = "full"
    st.radio(_("Cleanup"), levels, key="cleanup_level", **KEEP,
             format_func=speaking_now(lambda k: _(CLEANUP_LEVELS[k][0])),
             help="\n\n".join(f"{_(CLEANUP_LEVELS[k][0])}: {_(CLEANUP_LEVELS[k][1])}"
                              for k in levels), horizontal=True)
    st.caption("  \n".join(_option_line(o) for o in options))
    st.button(_("🧹 Clear memory"), key="cleanup_button", on_click=_run_cleanup,
              width="stretch")
    result = st.session_state.get("_last_cleanup")
    if result is not None:
        freed = {
            _("host RSS"): result.host_rss_freed_bytes,
            _("torch allocated"): result.torch_allocated_freed_bytes,
            _("torch reserved"): result.torch_reserved_freed_bytes,
            _("GPU (NVML, process)"): result.nvml_process_freed_bytes,
        }
        parts = [f"{k} {fmt_bytes(v)}" for k, v in freed.items() if v is not None]
        where = ""
        if result.details.get("worker_pid"):
            where = _(" in worker pid {pid}").format(pid=result.details["worker_pid"])
            left = result.details.get("upstream_modules_left")
            if left is not None and session.engine_name == "glm-tts":
                where += _(" ({count} upstream modules left)").format(count=left)
        st.success(_("{level} cleanup{where} freed {parts} in {time}").format(
            level=_(CLEANUP_LEVELS[result.level][0]) if result.level in CLEANUP_LEVELS
            else result.level.capitalize(), where=where, parts=_(", ").join(parts),
            time=fmt_seconds(result.duration_s)), icon="🧹")


MODE_HELP = {
    "advise": N_("recommend only"),
    "auto": N_("run a required cleanup before the synthesis (recorded)"),
    "off": N_("no recommendations"),
}
MODE_WORDS = {"advise": N_("advise"), "auto": N_("auto"), "off": N_("off")}
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
    key = (id(session), session.events_recorded, id(session.engine), request, mode,
           i18n.language())
    cached = st.session_state.get("_advice")
    if cached is not None and cached[0] == key:
        return cached[1]
    rec = session.recommend(request, record=False)
    st.session_state["_advice"] = (key, rec)
    return rec


def policy_box() -> None:
    session = tts_session()
    st.session_state.setdefault("policy_mode", session.policy_mode)
    mode = st.radio(_("Cleanup policy"), MODES, key="policy_mode", **KEEP, horizontal=True,
                    format_func=speaking_now(lambda m: _(MODE_WORDS.get(m, m))),
                    help="\n\n".join(f"**{_(MODE_WORDS[m])}**: {_(h)}"
                                     for m, h in MODE_HELP.items()))
    session.policy_mode = mode
    if mode == "off":
        return
    rec = _advice(session, mode)
    _BOX[rec.urgency](rec.summary, icon="🧭")
    with st.expander(_("Why")):
        for reason in rec.reasons:
            st.markdown(f"- **{reason.rule}** ({word(reason.urgency)}): {reason.text}")
        figures = {
            _("predicted peak"): fmt_bytes(rec.predicted_peak_bytes),
            _("upper bound"): fmt_bytes(rec.predicted_peak_upper_bytes),
            _("needed"): fmt_bytes(rec.needed_bytes),
            _("headroom"): fmt_bytes(rec.headroom_bytes),
            _("light cleanup frees"): fmt_bytes(rec.light_frees_bytes),
            _("full cleanup frees"): fmt_bytes(rec.full_frees_bytes),
            _("reload cost"): fmt_seconds(rec.reload_cost_s),
        }
        st.caption(" · ".join(f"{k}: {v}" for k, v in figures.items()))
    st.session_state["_policy_action"] = rec.action
    if rec.action != "none":
        st.button(_("Apply: {action} cleanup").format(action=word(rec.action)), key="policy_apply",
                  on_click=_apply_recommendation, width="stretch")


def render_sidebar() -> None:
    with st.sidebar:
        language.selector()
        device_card(current_snapshot())
        model_state()
        st.divider()
        policy_box()
        st.divider()
        cleanup_controls()
        idle_controls(tts_session())
