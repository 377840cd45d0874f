"""CUDA memory history for pytorch.org/memory_viz: the CPU answer here, the real thing on a GPU."""

from __future__ import annotations

import pickle

import pytest

from monitoring.allocator_history import MemoryHistory, snapshot_filename, unavailable_reason
from monitoring.errors import SnapshotUnavailableError


def test_without_cuda_it_says_why() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "need CUDA" in (unavailable_reason() or "")
    history = MemoryHistory(10)
    with pytest.raises(SnapshotUnavailableError, match="need CUDA"):
        history.start()
    with pytest.raises(SnapshotUnavailableError, match="need CUDA"):
        history.snapshot_bytes()
    assert not history.recording
    with history.tagged("synthesis abc"):  # tagging while not recording is a no-op
        pass
    history.stop()  # idempotent


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryHistory(0)
    with pytest.raises(ValueError, match="stacks"):
        MemoryHistory(10, stacks="cpp")
    assert snapshot_filename().startswith("memory-snapshot-")
    assert snapshot_filename().endswith(".pickle")


@pytest.mark.gpu
def test_records_a_bounded_tagged_history(tmp_path) -> None:
    import torch

    history = MemoryHistory(max_entries=64)
    history.start()
    try:
        with history.tagged("synthesis 0123456789abcdef"):
            blocks = [torch.empty(1 << 20, device="cuda") for _ in range(100)]
        del blocks
        snapshot = pickle.loads(history.snapshot_bytes())
        trace = [event for device in snapshot["device_traces"] for event in device]
        assert 0 < len(trace) <= 64  # the ring is bounded
        tag = "synthesis 0123456789abcdef"  # under "user_metadata" in torch 2.13's entries
        tagged = [e for e in trace if tag in e.values()]
        assert tagged, "no event carries the synthesis tag"
        path = history.write(tmp_path / "s.pickle")
        assert pickle.loads(path.read_bytes())["segments"] is not None
    finally:
        history.stop()
    assert not history.recording
