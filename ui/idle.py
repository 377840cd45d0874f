"""The sidebar's *Idle release*: the service's tiers (:mod:`glmtts.idle`) for this browser
session's model, off by default.

Streamlit has no timer, but the app's process outlives every run: one
:class:`~glmtts.idle.IdleReleaser` thread per process (in :func:`ui.state.app_resources`,
started by the first session that turns tiers on) ticks the tiers of every browser session
that has them. The setting is a persisted text field (``off`` or ``T1,T2,T3`` seconds); while
it is on, a fragment of the sidebar redraws every second with the countdown to the next tier
and the last tier run: what it freed and what coming back (the reload) cost, measured.
"""

from __future__ import annotations

import streamlit as st

from glmtts.idle import IdleTiers, parse_tiers
from glmtts.session import SynthesisSession
from monitoring.i18n import N_, _
from ui.form_memory import KEEP
from ui.format import fmt_bytes, fmt_seconds
from ui.state import app_resources

KEY = "idle_tiers"
#: What each tier does, in words.
TIER_WORDS = {"light": N_("light cleanup"), "full": N_("unload the model"),
              "restart": N_("restart the worker")}
#: How often the countdown redraws, in seconds.
REDRAW_S = 1.0


def session_tiers(session: SynthesisSession, tiers: tuple[float, ...]) -> IdleTiers | None:
    """This browser session's tiers, made (and watched by the process's releaser) once tiers
    are first turned on; None while they never were."""
    held: IdleTiers | None = st.session_state.get("_idle")
    if held is not None and held.session is not session:
        app_resources().idle.unwatch(held)
        held = None
    if held is None:
        if not tiers:
            return None
        held = IdleTiers(session, tiers)
        st.session_state["_idle"] = held
    held.set_tiers(tiers)
    if tiers:
        app_resources().idle.watch(held)
    return held


def _freed(entry: dict) -> str:
    parts = [(entry.get("host_rss_freed_bytes"), _("host RSS")),
             (entry.get("torch_reserved_freed_bytes"), _("torch reserved")),
             (entry.get("nvml_process_freed_bytes"), _("GPU (NVML, process)"))]
    return _(", ").join(f"{name} {fmt_bytes(v)}" for v, name in parts if v is not None) or "n/a"


def _what(entry: dict) -> str:
    return _("tier {tier} ({action})").format(tier=entry["tier"],
                                              action=_(TIER_WORDS[entry["level"]]))


def last_lines(recent: list[dict]) -> list[str]:
    """What the last tier that ran freed and what coming back cost; and the newest tier
    when it was skipped, with why."""
    ran = [e for e in recent if not e.get("skipped")]
    lines = [last_line(ran[-1])] if ran else []
    if recent and recent[-1].get("skipped"):
        lines.append(_("{what} skipped: {reason}.").format(
            what=_what(recent[-1]).capitalize(), reason=_(recent[-1]["skipped"])))
    return lines


def last_line(entry: dict) -> str:
    """One sentence on a tier that ran: what it freed and what coming back cost."""
    what = _what(entry)
    line = _("Last: {what} freed {freed} in {time}").format(
        what=what, freed=_freed(entry), time=fmt_seconds(entry.get("duration_s")))
    if entry["level"] == "light":
        return line + _("; coming back costs nothing (the model stayed).")
    if "return_s" in entry:
        return line + _("; coming back cost {time} (the next synthesis's reload, "
                        "measured).").format(time=fmt_seconds(entry["return_s"]))
    return line + _("; coming back: the next synthesis reloads (not measured yet).")


def countdown_line(state: dict) -> str:
    """One sentence on where the idle period stands."""
    if state["busy"]:
        return _("A synthesis runs: nothing is released under it.")
    if not state["holding"]:
        return _("Nothing loaded: nothing to release.")
    if state["next_tier"] is None:
        return _("Every tier ran in this idle period; the next synthesis starts a new one.")
    return _("Next: {action} in {time} (tier {tier} of {count}, idle {idle}).").format(
        action=_(TIER_WORDS[state["next_level"]]), time=fmt_seconds(state["next_in_s"]),
        tier=state["next_tier"], count=len(state["tiers_s"]),
        idle=fmt_seconds(state["idle_s"]))


def _status() -> None:
    from ui import language

    language.apply()  # a fragment's rerun may run on a fresh thread
    held: IdleTiers | None = st.session_state.get("_idle")
    if held is None or not held.tiers:
        return
    state = held.state()
    st.caption("⏱️ " + countdown_line(state), help=_("Idleness counts from the end of this "
                                                     "session's last load or synthesis"))
    for line in last_lines(state["recent"]):
        st.caption(line)


_live_status = st.fragment(run_every=REDRAW_S)(_status)


def idle_controls(session: SynthesisSession) -> None:
    """The setting and, while it is on, its live countdown."""
    st.session_state.setdefault(KEY, "off")
    text = st.text_input(
        _("Idle release (seconds)"), key=KEY, **KEEP,
        help=_("off, or T1,T2,T3: after T1 idle seconds a light cleanup, after T2 the model "
               "is unloaded (its memory goes back; the next synthesis reloads), after T3 the "
               "engine's worker process is restarted (when it runs in one). Each tier is "
               "recorded like a cleanup; a running synthesis is never released under."))
    try:
        tiers = parse_tiers(text)
    except ValueError:
        st.error(_("Write off, or up to three increasing numbers of seconds, e.g. "
                   "300,900,3600."))
        tiers = ()
    session_tiers(session, tiers)
    if tiers:
        _live_status()
