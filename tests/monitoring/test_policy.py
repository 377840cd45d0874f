"""The cleanup policy, rule by rule, over recorded traces (fixtures/policy/*.json).

CPU traces were recorded with the real piper engine through SynthesisSession and the store;
GPU traces are synthetic, shaped like the mission's A10G figures (no GPU here): each file says
which in its ``source``. Every case loads a trace as ``Store.events()`` rows, optionally changes
the memory now (snapshot overrides) or the history, and checks the verdict and its reasons.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from monitoring import Store, Tracker
from monitoring.policy import (
    RULES,
    HistoryEvent,
    PendingRequest,
    PolicySettings,
    Recommendation,
    history_from_frame,
    history_from_records,
    lighter_request,
    predict_peak,
    recommend,
    should_act,
)
from monitoring.snapshot import Snapshot
from monitoring.units import fmt_bytes


def _helper():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "monitoring_tests_tts_view", Path(__file__).with_name("tts_view.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_view = _helper()
make_pending, settings, KV_LIGHTER = _view.pending, _view.settings, _view.KV_LIGHTER
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "policy"
MiB, GiB = 1 << 20, 1 << 30
A10G_TOTAL = 23028 * MiB
GLM = {"engine": "glm-tts", "device": "cuda:0", "sample_rate": 24000,
       "reference_audio": "prompts/jiayan_zh.wav"}
PIPER = {"engine": "piper", "device": "cpu"}


def load_trace(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def gpu_free(free: int, total: int = A10G_TOTAL) -> dict[str, int]:
    """Snapshot overrides: ``free`` bytes left on the GPU, the rest held by someone."""
    return {"nvml_device_free_bytes": free, "nvml_device_used_bytes": total - free}


@dataclass(frozen=True)
class Case:
    """One row of the table: a trace, a pending request, what changes, what to expect."""

    id: str
    trace: str
    pending: dict[str, Any] | None
    expect_action: str
    expect_urgency: str
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    snapshot: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    history_slice: tuple[int, int] | None = None
    append: tuple[dict[str, Any], ...] = ()


FULL_CLEANUP = {"kind": "cleanup", "label": "full", "duration_s": 0.31, "ok": True, "oom": False,
                "features": {"level": "full", "gc_collected": 120, "releasable": True}}
OOM_SYNTHESIS = {"kind": "synthesis", "label": "oom", "duration_s": 0.5, "ok": False, "oom": True,
                 "features": {**GLM, "text_chars": 60}}


def _non_torch_growth(count: int = 6, step: int = 96 * MiB) -> list[dict[str, Any]]:
    """Syntheses whose torch figures stay flat while NVML's per-process figure grows: memory
    outside PyTorch's allocator (a leaking library, CUDA context growth)."""
    rows = []
    for i in range(count):
        nvml = 8_353_961_148 + (i + 1) * step
        rows.append({"kind": "synthesis", "label": f"grow {i}", "duration_s": 4.0, "ok": True,
                     "oom": False, "features": {**GLM, "text_chars": 45},
                     "torch_allocated_before_bytes": 6_618_951_424,
                     "torch_allocated_after_bytes": 6_620_000_000,
                     "torch_reserved_before_bytes": 7_808_701_628,
                     "torch_reserved_after_bytes": 7_808_701_628,
                     "nvml_process_before_bytes": nvml - step, "nvml_process_after_bytes": nvml})
    return rows


NON_TORCH_GROWTH = _non_torch_growth()


def _heap_repeats(count: int, in_use_step: int, releasable_step: int) -> list[dict[str, Any]]:
    """Syntheses of one request shape (the same configuration and size) after the piper
    plateau trace, with the host heap figures a glibc process records: RSS rises 16 MiB each,
    of which ``in_use_step`` in live malloc blocks and ``releasable_step`` free."""
    rows, rss = [], 601_473_024
    for i in range(count):
        rows.append({"kind": "synthesis", "label": f"repeat {i}", "duration_s": 0.5, "ok": True,
                     "oom": False, "features": {**PIPER, "text_chars": 120, "seed": i,
                                                  "use_kv_cache": False},
                     "host_rss_before_bytes": rss, "host_rss_after_bytes": rss + 16 * MiB,
                     "host_rss_peak_bytes": rss + 40 * MiB,
                     "host_heap_in_use_after_bytes": 180 * MiB + i * in_use_step,
                     "host_heap_releasable_after_bytes": 8 * MiB + i * releasable_step})
        rss += 16 * MiB
        if i == count // 2:  # a full cleanup and a reload in between change nothing of it
            rows += [FULL_CLEANUP, {"kind": "load", "duration_s": 0.4, "ok": True, "oom": False,
                                    "features": {**PIPER, "weights_bytes": 62_601_836},
                                    "host_rss_before_bytes": rss, "host_rss_after_bytes": rss}]
    return rows


HEAP_LEAK = _heap_repeats(8, 16 * MiB, 0)
HEAP_RETAINED = _heap_repeats(8, 0, 16 * MiB)
# The thin/rich pair: memory now such that the rich fit fits and the thin bound does not.
THIN_NOW = {"torch_reserved_bytes": 6_621_000_000 + int(1.5 * GiB), "torch_inactive_split_bytes":
            490 * MiB, "torch_allocated_bytes": 6_621_000_000, "torch_active_bytes":
            6_621_000_000, **gpu_free(int(1.7 * GiB))}
# Memory right after a full cleanup: torch holds nothing, the CUDA context stays.
AFTER_FULL = {"torch_reserved_bytes": 0, "torch_allocated_bytes": 0, "torch_active_bytes": 0,
              "torch_inactive_split_bytes": 0, "nvml_process_used_bytes": 520 * MiB,
              **gpu_free(A10G_TOTAL - 520 * MiB)}

CASES = [
    # --- cache growth that levels off is not a leak; a light cleanup only helps others
    Case("gpu-cache-levels-off-is-not-a-leak", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60}, "light", "info",
         present=("headroom.fits", "cache.levelled", "cache.reclaimable"),
         absent=("leak", "cache.growing", "switch", "cost.not_needed"),
         texts=("levelled off", "not a leak", "only helps other programs")),
    Case("gpu-cache-advised-when-others-need-it", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60}, "light", "advised", present=("cache.reclaimable",),
         texts=("other processes hold",), snapshot=gpu_free(int(1.5 * GiB))),
    # --- headroom
    Case("gpu-cached-memory-counts-as-room", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60}, "none", "info", present=("headroom.fits",),
         absent=("headroom.light",), texts=("keep it",), snapshot=gpu_free(200 * MiB)),
    Case("gpu-light-makes-room-when-cache-is-not-reused", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60}, "light", "required", present=("headroom.light",),
         texts=("light cleanup required",), snapshot=gpu_free(200 * MiB),
         settings={"reuses_cache": False}),
    Case("gpu-full-makes-room", "gpu_a10g_kv", {**GLM, "text_chars": 270, "use_kv_cache": True},
         "full", "required", present=("headroom.full", "fragmentation"),
         absent=("cost.not_needed",),
         texts=("full cleanup required (~11.8 s to reload)", "after a full cleanup and reload")),
    Case("gpu-nothing-makes-room", "gpu_a10g_kv", {**GLM, "text_chars": 600, "use_kv_cache": True},
         "none", "required", present=("headroom.impossible",),
         texts=("this GPU could have even after a full cleanup", "turn the KV cache off",
                "with it off the prediction is")),
    Case("gpu-kv-off-same-length-fits-and-others-want-the-cache", "gpu_a10g_kv",
         {**GLM, "text_chars": 600}, "light", "advised",
         present=("headroom.fits", "cache.reclaimable", "cost.not_needed"),
         absent=("headroom.impossible",), texts=("hands the cache to them",),
         snapshot=gpu_free(2 * GiB)),
    Case("gpu-rich-history-fits", "gpu_a10g_kv", {**GLM, "text_chars": 120, "use_kv_cache": True},
         "none", "info", present=("headroom.fits",), snapshot=THIN_NOW),
    Case("gpu-thin-history-gets-the-margin", "gpu_a10g_kv",
         {**GLM, "text_chars": 120, "use_kv_cache": True}, "full", "required",
         present=("headroom.full",), texts=("widened 50% for thin history",),
         snapshot=THIN_NOW, history_slice=(0, 5)),
    Case("no-history-cannot-predict", "cpu_piper_plateau", {**PIPER, "text_chars": 120},
         "none", "info", present=("headroom.unknown",), history_slice=(0, 1)),
    # --- leak versus cache, and the cost of a reload
    Case("gpu-leak-not-worth-a-reload-with-room", "gpu_a10g_leak", {**GLM, "text_chars": 60},
         "light", "info", present=("leak", "cost.not_needed"), absent=("cache.levelled",),
         texts=("47.5 MiB per synthesis", "(a leak)", "would free 6.8 GiB but cost ~11.8 s to "
                "reload and is not needed now")),
    Case("gpu-leak-advised-when-memory-is-tight", "gpu_a10g_leak", {**GLM, "text_chars": 60},
         "full", "advised", present=("leak",), absent=("cost.not_needed",),
         texts=("lasts about 18 more syntheses",), snapshot=gpu_free(200 * MiB)),
    Case("gpu-leak-idle-check", "gpu_a10g_leak", None, "light", "info",
         present=("leak", "cost.not_needed"), absent=("headroom.fits", "switch")),
    Case("cpu-rss-plateau-is-not-a-leak", "cpu_piper_plateau", {**PIPER, "text_chars": 300},
         "none", "info", present=("headroom.fits", "cache.levelled"), absent=("leak",),
         texts=("glibc",)),
    Case("cpu-leak-not-worth-a-reload-with-room", "cpu_piper_leak", {**PIPER, "text_chars": 300},
         "light", "info", present=("leak", "cost.not_needed"),
         texts=("host RSS left after each synthesis rises 24.0 MiB",)),
    Case("cpu-leak-advised-when-ram-is-tight", "cpu_piper_leak", {**PIPER, "text_chars": 300},
         "full", "advised", present=("leak",), absent=("cost.not_needed",),
         snapshot={"system_available_bytes": GiB}),
    Case("cpu-no-cleanup-makes-room", "cpu_piper_plateau", {**PIPER, "text_chars": 300},
         "none", "required", present=("headroom.impossible",), texts=("shorten the text",),
         snapshot={"system_available_bytes": 60 * MiB, "host_rss_bytes": 391_000_000}),
    Case("cpu-thin-history-gets-the-margin", "cpu_piper_thin", {**PIPER, "text_chars": 300},
         "none", "info", present=("headroom.fits",), texts=("widened 50% for thin history",)),
    # --- on a CPU with glibc's heap figures: free memory kept versus live blocks
    Case("cpu-free-heap-explains-the-growth-light-advised", "cpu_piper_plateau",
         {**PIPER, "text_chars": 300}, "light", "advised", present=("cache.reclaimable",),
         absent=("leak", "leak.heap"),
         texts=("~150 MiB held free by the C allocator (glibc): 75% of the 200 MiB host RSS grew "
                "since the load", "not a leak", "a light cleanup (malloc_trim) returns it"),
         snapshot={"host_heap_releasable_bytes": 150 * MiB}),
    Case("cpu-free-heap-a-minority-of-the-growth-is-a-note", "cpu_piper_plateau",
         {**PIPER, "text_chars": 300}, "light", "info", present=("cache.reclaimable",),
         texts=("~70.0 MiB held free by the C allocator", "only helps other programs"),
         snapshot={"host_heap_releasable_bytes": 70 * MiB}),
    Case("cpu-free-heap-advised-when-ram-is-tight", "cpu_piper_plateau", None, "light",
         "advised", present=("cache.reclaimable",), texts=("of RAM is available",),
         snapshot={"host_heap_releasable_bytes": 70 * MiB, "system_available_bytes": GiB}),
    Case("cpu-live-heap-rising-over-repeats-is-a-leak", "cpu_piper_plateau",
         {**PIPER, "text_chars": 120}, "none", "advised", present=("leak.heap",),
         absent=("leak",),
         texts=("C heap in use (live malloc blocks) rose 16.0 MiB per synthesis over the last 7 "
                "repeats", "the cleanups in between did not bring it down",
                "restarting the process is the remedy"), append=tuple(HEAP_LEAK)),
    Case("cpu-live-heap-leak-in-a-worker-advises-its-restart", "cpu_piper_plateau",
         {**PIPER, "text_chars": 120}, "restart", "advised", present=("leak.heap",),
         append=tuple(HEAP_LEAK), settings={"restart_available": True}),
    Case("cpu-free-heap-rising-over-repeats-is-not-a-leak", "cpu_piper_plateau",
         {**PIPER, "text_chars": 120}, "light", "advised", present=("cache.reclaimable",),
         absent=("leak", "leak.heap"), append=tuple(HEAP_RETAINED),
         texts=("more than the 48.0 MiB host RSS grew since the load",),
         snapshot={"host_rss_bytes": 601_473_024 + 8 * 16 * MiB,
                   "host_heap_releasable_bytes": 120 * MiB}),
    # --- fragmentation
    Case("gpu-fragmentation-advised-when-the-request-is-tight", "gpu_a10g_fragmentation",
         {**GLM, "text_chars": 360, "use_kv_cache": True}, "full", "advised",
         present=("fragmentation", "fragmentation.retries", "headroom.fits"),
         absent=("cost.not_needed",), texts=("expandable_segments", "retry 3 time(s)"),
         snapshot=gpu_free(GiB)),
    Case("gpu-fragmentation-not-worth-a-reload-with-room", "gpu_a10g_fragmentation",
         {**GLM, "text_chars": 200, "use_kv_cache": True}, "light", "info",
         present=("fragmentation", "cost.not_needed")),
    # --- configuration switches
    Case("gpu-sample-rate-switch-needs-a-reset", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60, "sample_rate": 32000}, "full", "required",
         present=("switch",), texts=("sample_rate changes 24000 → 32000", "Hann window")),
    Case("gpu-reference-switch-needs-a-reset", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60, "reference_audio": "prompts/other.wav"}, "full", "required",
         present=("switch",), texts=("reference_audio changes",)),
    Case("gpu-switch-after-a-full-cleanup-is-free", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60, "sample_rate": 32000}, "none", "info",
         present=("headroom.fits",), absent=("switch", "cache.reclaimable"),
         append=(FULL_CLEANUP,), snapshot=AFTER_FULL),
    Case("gpu-switch-features-are-a-setting", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60, "sample_rate": 32000}, "light", "info", absent=("switch",),
         settings={"switch_rules": (("engine", "full", "x"), ("voice", "full", "y"))}),
    # --- what only a restart of the worker frees
    Case("gpu-non-torch-growth-advises-a-restart", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60}, "restart", "advised", present=("restart.non_torch",),
         texts=("outside PyTorch's allocator", "restart the worker"),
         append=tuple(NON_TORCH_GROWTH), settings={"restart_available": True}),
    Case("gpu-non-torch-growth-in-process-says-nothing-of-restarts", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60}, "light", "info", absent=("restart.non_torch",),
         append=tuple(NON_TORCH_GROWTH)),
    Case("gpu-oom-after-a-full-cleanup-advises-a-restart", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60}, "restart", "advised", present=("restart.oom",),
         texts=("ran out of memory again after a full cleanup",),
         append=(OOM_SYNTHESIS, FULL_CLEANUP, OOM_SYNTHESIS),
         settings={"restart_available": True}),
    Case("gpu-declared-switch-handled-by-the-engine", "gpu_a10g_cache_levels",
         {**GLM, "text_chars": 60, "sample_rate": 32000}, "light", "info", present=("switch",),
         texts=("swaps the vocoder", "nothing to clean"),
         settings={"switch_rules": (("sample_rate", "none", "the engine swaps the vocoder"),)}),
]


def run_case(case: Case) -> Recommendation:
    data = load_trace(case.trace)
    rows = list(data["history"])
    if case.history_slice is not None:
        rows = rows[slice(*case.history_slice)]
    rows += list(case.append)
    snapshot = Snapshot(monotonic_s=0.0, wall_s=0.0, **{**data["snapshot"], **case.snapshot})
    pending = None if case.pending is None else make_pending(**case.pending)
    return recommend(snapshot, history_from_frame(pd.DataFrame(rows)), pending,
                     settings(**case.settings))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_table(case: Case) -> None:
    rec = run_case(case)
    described = "\n".join(f"{r.rule} {r.action}/{r.urgency}: {r.text}" for r in rec.reasons)
    assert (rec.action, rec.urgency) == (case.expect_action, case.expect_urgency), described
    for rule in case.present:
        assert rule in rec.rules, described
    for rule in case.absent:
        assert rule not in rec.rules, described
    text = " ".join(r.text for r in rec.reasons)
    for snippet in case.texts:
        assert snippet in text, described
    assert set(rec.rules) <= set(RULES)
    assert rec.reasons == tuple(sorted(rec.reasons, key=lambda r: r.urgency == "info"))


def test_every_rule_family_is_covered_by_the_table() -> None:
    seen = {rule for case in CASES for rule in case.present}
    assert seen >= set(RULES) - {"cache.growing", "policy.off"}


def test_recommendation_figures() -> None:
    rec = run_case(CASES[0])
    data = load_trace("gpu_a10g_cache_levels")
    snap = data["snapshot"]
    assert rec.domain == "gpu"
    assert rec.headroom_bytes == snap["nvml_device_free_bytes"]
    assert rec.light_frees_bytes == (snap["torch_reserved_bytes"] - snap["torch_allocated_bytes"]
                                     - snap["torch_inactive_split_bytes"])
    assert rec.full_frees_bytes == 6_620_000_000 + rec.light_frees_bytes
    assert rec.reload_cost_s == pytest.approx(11.84)
    assert rec.predicted_peak_bytes is not None and rec.predicted_peak_upper_bytes is not None
    assert 0.25e9 < rec.predicted_peak_bytes <= rec.predicted_peak_upper_bytes < 0.4e9
    assert json.dumps(rec.to_features())  # JSON-ready for store.log_event("recommendation")


def test_cpu_figures_say_what_cannot_be_known() -> None:
    rec = run_case(next(c for c in CASES if c.id == "cpu-rss-plateau-is-not-a-leak"))
    assert rec.domain == "cpu"
    assert rec.light_frees_bytes is None  # glibc's retained memory is not measurable beforehand
    assert rec.full_frees_bytes == load_trace("cpu_piper_plateau")["history"][0]["features"][
        "weights_bytes"]
    assert rec.headroom_bytes == load_trace("cpu_piper_plateau")["snapshot"][
        "system_available_bytes"]


def test_kv_cache_on_is_predicted_to_cost_more() -> None:
    data = load_trace("gpu_a10g_kv")
    snapshot = Snapshot(monotonic_s=0.0, wall_s=0.0, **data["snapshot"])
    history = history_from_frame(pd.DataFrame(data["history"]))
    on = predict_peak(snapshot, history, make_pending(**GLM, text_chars=100, use_kv_cache=True),
                      settings())
    off = predict_peak(snapshot, history, make_pending(**GLM, text_chars=100), settings())
    assert on is not None and off is not None
    assert on.scope == off.scope == "configuration"
    assert on.peak_bytes > off.peak_bytes + 0.8e9  # ~1.2 GB vs ~0.35 GB at this length
    assert on.slope_bytes_per_char > 5 * off.slope_bytes_per_char


def test_thin_history_widens_the_upper_bound() -> None:
    data = load_trace("gpu_a10g_kv")
    snapshot = Snapshot(monotonic_s=0.0, wall_s=0.0, **data["snapshot"])
    pending = make_pending(**GLM, text_chars=120, use_kv_cache=True)
    thin = predict_peak(snapshot, history_from_frame(pd.DataFrame(data["history"][:5])), pending,
                        settings())
    rich = predict_peak(snapshot, history_from_frame(pd.DataFrame(data["history"])), pending,
                        settings())
    assert thin is not None and rich is not None
    assert thin.thin and not rich.thin
    assert thin.peak_upper_bytes >= 1.5 * thin.peak_bytes
    assert rich.peak_upper_bytes < 1.15 * rich.peak_bytes


def test_unseen_configuration_borrows_from_the_engine_with_the_margin() -> None:
    data = load_trace("gpu_a10g_cache_levels")
    snapshot = Snapshot(monotonic_s=0.0, wall_s=0.0, **data["snapshot"])
    history = history_from_frame(pd.DataFrame(data["history"]))
    pred = predict_peak(snapshot, history, make_pending(**GLM | {"sample_rate": 32000},
                                                          text_chars=60), settings())
    assert pred is not None and pred.scope == "engine" and pred.thin


# ----------------------------------------------------------------------------- modes


def _switch_rec(mode: str) -> Recommendation:
    case = next(c for c in CASES if c.id == "gpu-sample-rate-switch-needs-a-reset")
    return run_case(dataclasses.replace(case, settings={"mode": mode}))


def test_mode_off_says_so_and_nothing_else() -> None:
    rec = _switch_rec("off")
    assert (rec.action, rec.urgency, rec.rules) == ("none", "info", ("policy.off",))
    assert rec.reasons[0].text == "policy off"
    assert not rec.should_act


def test_auto_acts_only_on_required_actions() -> None:
    assert _switch_rec("auto").should_act
    assert not _switch_rec("advise").should_act
    assert should_act(_switch_rec("advise"), "auto")
    leak = next(c for c in CASES if c.id == "gpu-leak-advised-when-memory-is-tight")
    assert not should_act(run_case(leak), "auto")  # advised is not acted on
    impossible = next(c for c in CASES if c.id == "gpu-nothing-makes-room")
    rec = run_case(impossible)
    assert rec.urgency == "required" and not should_act(rec, "auto")  # nothing to run
    assert rec.lighter == make_pending(**GLM, text_chars=600, use_kv_cache=False)
    with pytest.raises(ValueError, match="mode"):
        should_act(rec, "sometimes")


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        PolicySettings(mode="always")
    with pytest.raises(ValueError, match="between 0 and 1"):
        PolicySettings(comfort_fraction=1.5)
    with pytest.raises(ValueError, match="at least 1"):
        PolicySettings(leak_window=0)


# ----------------------------------------------------------------------------- requests


def test_lighter_request_applies_what_the_engine_declares() -> None:
    heavy = make_pending(**GLM, text_chars=300, use_kv_cache=True)
    assert lighter_request(heavy, KV_LIGHTER) == make_pending(**GLM, text_chars=300)
    assert lighter_request(make_pending(**GLM, text_chars=300), KV_LIGHTER) is None
    assert lighter_request(heavy, ()) is None  # an engine that declares nothing lighter


def test_pending_request_is_generic() -> None:
    work = PendingRequest(engine="any", size=42, device="cpu",
                          features=(("b", 2), ("a", 1), ("unhashable", [1])))
    assert work.features == (("a", 1), ("b", 2))  # sorted; unhashable values left out
    assert work.feature_map() == {"a": 1, "b": 2, "engine": "any", "device": "cpu"}
    assert work.with_features({"a": 3}).feature_map()["a"] == 3
    with pytest.raises(ValueError, match="size"):
        PendingRequest(engine="any", size=-1)


def test_fmt_bytes() -> None:
    assert fmt_bytes(9.1 * GiB) == "9.1 GiB"
    assert fmt_bytes(512 * MiB) == "512 MiB"  # the one formatter (monitoring.units)
    assert fmt_bytes(62_601_836) == "59.7 MiB"
    assert fmt_bytes(-3 * 1024) == "-3.0 KiB"
    assert fmt_bytes(12) == "12 B"


# ----------------------------------------------------------------------------- history


def test_history_from_a_real_store_matches_the_records() -> None:
    store = Store(":memory:")
    tracker = Tracker(store=store)
    records = []
    with tracker.track("load", engine="demo", device="cpu") as handle:
        blob = bytearray(8 * MiB)
        handle.set(weights_bytes=len(blob))
    records.append(handle.record)
    with tracker.track("synthesis", engine="demo", device="cpu", text_chars=12) as handle:
        scratch = bytearray(4 * MiB)
        del scratch
    records.append(handle.record)
    from_store = history_from_frame(store.events(detail=True))
    from_records = history_from_records(records)
    assert [e.kind for e in from_store] == ["load", "synthesis"]
    for a, b in zip(from_store, from_records, strict=True):
        assert a.features == b.features
        assert a.host_rss == b.host_rss
        assert a.torch_allocated == b.torch_allocated
        assert a.ok and not a.oom
        assert a.duration_s == pytest.approx(b.duration_s)
    store.close()
    del blob


def test_history_reads_allocation_retries_from_detail() -> None:
    data = load_trace("gpu_a10g_fragmentation")
    history = history_from_frame(pd.DataFrame(data["history"]))
    retries = [(e.alloc_retries_before, e.alloc_retries_after) for e in history]
    assert retries[0] == (None, None)  # the load row has no detail
    assert retries[-1] == (2, 3)


def test_recommend_is_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    case = next(c for c in CASES if c.id == "gpu-full-makes-room")
    first = run_case(case)

    def no_clock() -> float:
        raise AssertionError("the policy must not read the clock")

    for name in ("time", "monotonic", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    again = run_case(case)
    assert again == first


def test_history_is_not_modified() -> None:
    data = load_trace("gpu_a10g_leak")
    history = history_from_frame(pd.DataFrame(data["history"]))
    copy = [dataclasses.replace(e, features=dict(e.features)) for e in history]
    snapshot = Snapshot(monotonic_s=0.0, wall_s=0.0, **data["snapshot"])
    recommend(snapshot, history, make_pending(**GLM, text_chars=60))
    assert history == copy
    assert isinstance(history[0], HistoryEvent)
