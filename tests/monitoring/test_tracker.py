"""Tracker with real probes on the CPU: host peaks, failures, features, markers."""

from __future__ import annotations

import mmap
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from monitoring import Change, Sampler, Store, Tracker, cleanup, is_out_of_memory

MiB = 1024**2


@pytest.mark.usefixtures("trimmed_heap")  # the figures below must be this tensor's alone
def test_256_mib_tensor_peak_and_retained_after_cleanup() -> None:
    tracker = Tracker()
    with tracker.track("synthesis", "256 MiB", size_mib=256) as handle:
        tensor = torch.ones(64 * MiB, dtype=torch.float32)  # 256 MiB, every page written
        handle.set(checksum=float(tensor[-1]))
        del tensor
    record = handle.record
    assert record is not None
    host = record.breakdown.host_rss
    assert record.peaks.host_rss_source == "vmhwm"
    assert host.peak_delta_bytes is not None
    assert host.peak_delta_bytes >= 240 * MiB
    cleanup.light()
    retained = tracker.probes.host.rss_bytes() - host.before_bytes
    # One-sided: the tensor's 256 MiB must not stay; giving back more than it took
    # (other freed heap trimmed too) is not retention.
    assert retained <= 32 * MiB, f"{retained / MiB:.1f} MiB still held after a light cleanup"
    assert record.features == {"size_mib": 256, "checksum": 1.0}


def test_transient_versus_retained_on_host(resident_block: Callable[[int], mmap.mmap]) -> None:
    with Tracker().track("synthesis") as handle:
        kept = resident_block(64 * MiB)
        resident_block(128 * MiB).close()  # freed before the end
    host = handle.record.breakdown.host_rss
    assert host.retained_bytes >= 56 * MiB
    assert host.transient_bytes >= 100 * MiB
    kept.close()


def test_body_exception_is_recorded_and_reraised() -> None:
    with Store(":memory:") as store:
        tracker = Tracker(store=store, session_id=store.start_session())
        error = ValueError("bad text")
        with (
            pytest.raises(ValueError, match="bad text") as raised,
            tracker.track("synthesis", "fails", chars=3),
        ):
            raise error
        assert raised.value is error
        events = store.events(kind="synthesis")
        assert len(events) == 1
        row = events.iloc[0]
        assert (row["ok"], row["oom"], row["error_type"]) == (False, False, "ValueError")
        assert row["error_message"] == "bad text"
        assert row["features"] == {"chars": 3}
        assert row["host_rss_before_bytes"] > 0


def test_out_of_memory_is_flagged() -> None:
    """Real allocation failures: Python's MemoryError and torch's CPU allocator error."""
    tracker = Tracker()
    with pytest.raises(MemoryError), tracker.track("synthesis") as python_oom:
        bytearray(2**62)
    with pytest.raises(RuntimeError), tracker.track("synthesis") as torch_oom:
        torch.empty(2**62, dtype=torch.uint8)
    for handle in (python_oom, torch_oom):
        assert handle.record.oom is True
        assert handle.record.ok is False
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_sampler_gets_markers_and_peak_window() -> None:
    sampler = Sampler(interval_s=0.01)
    tracker = Tracker(sampler=sampler)
    with tracker.track("load", "model") as handle:
        sampler.sample_once()
    starts = [m for m in sampler.markers() if m.event_id == handle.event_id]
    assert [(m.kind, m.phase, m.label) for m in starts] == [
        ("load", "start", "model"),
        ("load", "end", "model"),
    ]
    assert handle.record.peaks.samples == 1


def test_every_kind_can_be_tracked_and_unknown_is_refused() -> None:
    tracker = Tracker()
    for kind in ("load", "synthesis", "cleanup"):
        with tracker.track(kind) as handle:
            pass
        assert handle.record.kind == kind
        assert handle.record.duration_s >= 0
    with pytest.raises(ValueError, match="unknown event kind"):
        tracker.track("nap")


def test_store_failure_does_not_fail_the_body(caplog: pytest.LogCaptureFixture) -> None:
    store = Store(":memory:")
    store.close()  # every write now fails
    tracker = Tracker(store=store)
    with tracker.track("synthesis") as handle:
        result = 42
    assert result == 42
    assert handle.record is not None
    assert handle.store_error is not None
    assert any("event not stored" in r.getMessage() for r in caplog.records)


sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=2**40))


@given(before=sizes, after=sizes, peak=sizes)
def test_change_arithmetic(before: int | None, after: int | None, peak: int | None) -> None:
    change = Change(before, after, peak)
    parts = (change.retained_bytes, change.transient_bytes, change.peak_delta_bytes)
    if None in (before, after, peak):
        assert None in parts
    else:
        assert change.retained_bytes + change.transient_bytes == change.peak_delta_bytes
