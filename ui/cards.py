"""The per-synthesis memory card."""

from __future__ import annotations

import streamlit as st

from glmtts.outcome import SynthesisOutcome
from ui.format import fmt_bytes, fmt_seconds


def memory_card(outcome: SynthesisOutcome) -> None:
    """What this synthesis cost: deltas per probe, its peak, load, wall time and RTF."""
    rec, res = outcome.record, outcome.result
    b = rec.breakdown
    st.markdown("##### This synthesis")
    figures = [
        ("host RSS", b.host_rss, "this process's resident memory"),
        ("torch allocated", b.torch_allocated, "live tensors (torch allocator)"),
        ("torch reserved", b.torch_reserved, "allocator pool: live tensors + cache"),
        ("GPU, this process", b.nvml_process, "everything the driver charges to us (NVML)"),
    ]
    # what this machine measures leads (on a CPU: host RSS); what it cannot is one line
    present = [f for f in figures if f[1].before_bytes is not None]
    if b.torch_reserved.before_bytes is not None or b.nvml_process.before_bytes is not None:
        present = [f for f in present if f[0] != "host RSS"] + [
            f for f in present if f[0] == "host RSS"]
    missing = [f[0] for f in figures if f[1].before_bytes is None]
    for col, (name, change, help_text) in zip(st.columns(4), present, strict=False):
        col.metric(name, fmt_bytes(change.after_bytes),
                   delta=fmt_bytes(change.retained_bytes, signed=True),
                   delta_color="inverse",
                   help=f"{help_text}. Delta: retained after the call; peak "
                        f"{fmt_bytes(change.peak_bytes)} "
                        f"({fmt_bytes(change.peak_delta_bytes, signed=True)} above start)")
    if missing:
        st.caption(f"Not measured here: {', '.join(missing)} (no CUDA device or NVML in this "
                   f"run); the figures above are what this machine has.")
    cols = st.columns(4)
    host_peak = b.host_rss.peak_delta_bytes
    gpu_peak = b.torch_reserved.peak_delta_bytes
    cols[0].metric("peak above start", fmt_bytes(gpu_peak if gpu_peak is not None else host_peak),
                   help="torch reserved peak on GPU, else host RSS peak (VmHWM, reset per event)")
    cols[1].metric("load", fmt_seconds(outcome.load.duration_s) if outcome.load else "warm",
                   help="model load time, when this synthesis had to load it first")
    cols[2].metric("wall time", fmt_seconds(rec.duration_s),
                   help=f"{res.duration_s:.2f} s of audio; waited "
                        f"{fmt_seconds(outcome.waited_s)} for the device")
    cols[3].metric("real-time factor", f"{res.rtf:.3f}" if res.rtf else "n/a",
                   help="synthesis wall time / audio duration (below 1: faster than real time)")
    non_torch = b.non_torch_gpu
    parts = res.metadata.get("non_torch_parts") or []
    if non_torch.before_bytes is not None or parts:
        named = f" — includes {', '.join(parts)}" if parts else ""
        st.caption(f"Non-PyTorch GPU memory (NVML process − torch reserved: CUDA context, "
                   f"library workspaces){named}: {fmt_bytes(non_torch.after_bytes)} "
                   f"({fmt_bytes(non_torch.retained_bytes, signed=True)})")
