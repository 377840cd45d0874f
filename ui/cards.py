"""The per-synthesis memory card."""

from __future__ import annotations

import streamlit as st

from glmtts.outcome import SynthesisOutcome
from monitoring.i18n import _
from ui.format import fmt_bytes, fmt_seconds


def memory_card(outcome: SynthesisOutcome, first_audio_s: float | None = None,
                whole_s: float | None = None) -> None:
    """What this synthesis cost: deltas per probe, its peak, load, wall time and RTF; and,
    where the page measured them, the time to first audio and to the whole file (both from
    pressing *Synthesize*, a load included)."""
    rec, res = outcome.record, outcome.result
    b = rec.breakdown
    st.markdown(_("##### This synthesis"))
    figures = [
        (_("torch allocated"), b.torch_allocated, _("live tensors (torch allocator)")),
        (_("torch reserved"), b.torch_reserved, _("allocator pool: live tensors + cache")),
        (_("GPU, this process"), b.nvml_process,
         _("everything the driver charges to us (NVML)")),
        (_("host RSS"), b.host_rss, _("this process's resident memory")),
    ]
    # only what this machine measures is drawn (on a CPU: host RSS); the rest is one line
    present = [f for f in figures if f[1].before_bytes is not None]
    missing = [f[0] for f in figures if f[1].before_bytes is None]
    for col, (name, change, help_text) in zip(st.columns(4), present, strict=False):
        col.metric(name, fmt_bytes(change.after_bytes),
                   delta=fmt_bytes(change.retained_bytes, signed=True),
                   delta_color="inverse",
                   help=_("{what}. Delta: retained after the call; peak {peak} ({above} "
                          "above start)").format(
                       what=help_text, peak=fmt_bytes(change.peak_bytes),
                       above=fmt_bytes(change.peak_delta_bytes, signed=True)))
    if missing:
        st.caption(_("Not measured here: {figures} (no CUDA device or NVML in this run); the "
                     "figures above are what this machine has.").format(
                         figures=_(", ").join(missing)))
    cols = st.columns(4)
    host_peak = b.host_rss.peak_delta_bytes
    gpu_peak = b.torch_reserved.peak_delta_bytes
    cols[0].metric(_("peak above start"),
                   fmt_bytes(gpu_peak if gpu_peak is not None else host_peak),
                   help=_("torch reserved peak on GPU, else host RSS peak (VmHWM, reset per "
                          "event)"))
    cols[1].metric(_("load"), fmt_seconds(outcome.load.duration_s) if outcome.load else _("warm"),
                   help=_("model load time, when this synthesis had to load it first"))
    cols[2].metric(_("wall time"), fmt_seconds(rec.duration_s),
                   help=_("{seconds} s of audio; waited {wait} for the device").format(
                       seconds=f"{res.duration_s:.2f}", wait=fmt_seconds(outcome.waited_s)))
    cols[3].metric(_("real-time factor"), f"{res.rtf:.3f}" if res.rtf else "n/a",
                   help=_("synthesis wall time / audio duration (below 1: faster than real "
                          "time)"))
    in_use, held = b.host_heap_in_use.after_bytes, b.host_heap_releasable.after_bytes
    if in_use is not None:
        st.caption(_("C heap (glibc malloc) after it: {live} in live blocks, {held} held free "
                     "for reuse, which a light cleanup returns to the system").format(
                         live=fmt_bytes(in_use),
                         held=_("~{size}").format(size=fmt_bytes(held)) if held is not None
                         else _("an unknown amount")))
    if first_audio_s is not None:
        st.caption(_("Time to first audio: {first} from pressing Synthesize to the first "
                     "sentence's audio, against {whole} to the whole file (a load "
                     "included in both).").format(first=fmt_seconds(first_audio_s),
                                                  whole=fmt_seconds(whole_s)))
    non_torch = b.non_torch_gpu
    parts = res.metadata.get("non_torch_parts") or []
    if non_torch.before_bytes is not None or parts:
        named = _(" — includes {parts}").format(parts=", ".join(parts)) if parts else ""
        st.caption(_("Non-PyTorch GPU memory (NVML process − torch reserved: CUDA context, "
                     "library workspaces){named}: {size} ({change})").format(
                         named=named, size=fmt_bytes(non_torch.after_bytes),
                         change=fmt_bytes(non_torch.retained_bytes, signed=True)))
    precision_line(outcome)


def precision_line(outcome: SynthesisOutcome) -> None:
    """The precision of the weights and their size (engines that offer a choice), and why
    ``auto`` loaded 16 bits when this synthesis loaded the model."""
    meta = outcome.result.metadata
    dtype = meta.get("dtype")
    if not dtype:
        return
    load = outcome.load.features if outcome.load is not None else {}
    requested = load.get("dtype_requested")
    st.caption(_("Precision {dtype}{auto}: {size} of weights").format(
        dtype=dtype, auto=_(" (chosen automatically)") if requested == "auto" else "",
        size=fmt_bytes(meta.get("weights_bytes"))))
    if load.get("dtype_reason"):
        need, free = load.get("dtype_fp32_need_bytes"), load.get("dtype_free_bytes")
        st.info(_("Loaded in {dtype}: fp32 needs ~{need}, {free} free.").format(
            dtype=dtype, need=fmt_bytes(need), free=fmt_bytes(free)), icon="🪶")
