"""Host probe and snapshots on the CPU side, with real probes only."""

from __future__ import annotations

import json
import mmap
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from monitoring import HostProbe, Probes, Snapshot, take_snapshot

MiB = 1024**2
RunPython = Callable[..., subprocess.CompletedProcess[str]]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def test_rss_and_system_memory_are_real() -> None:
    probe = HostProbe()
    rss = probe.rss_bytes()
    available, total = probe.system_memory()
    assert rss is not None
    assert rss > 10 * MiB
    assert total is not None
    assert available is not None
    assert 0 < available <= total


@linux_only
def test_peak_rss_resets_per_event(resident_block: Callable[[int], mmap.mmap]) -> None:
    """VmHWM reset via clear_refs: a freed 128 MiB block no longer counts after the reset."""
    probe = HostProbe()
    block = resident_block(128 * MiB)
    high = probe.peak_rss_bytes()
    block.close()
    assert probe.reset_peak() is True
    assert probe.peak_resettable is True
    low = probe.peak_rss_bytes()
    assert high is not None
    assert low is not None
    assert high - low >= 100 * MiB
    rss = probe.rss_bytes()
    assert rss is not None
    assert low >= rss - 4 * MiB


def test_snapshot_fields_and_json() -> None:
    snapshot = take_snapshot()
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert data["host_rss_bytes"] == snapshot.host_rss_bytes
    assert data["wall_s"] > 1.6e9
    assert "non_torch_gpu_bytes" in data
    assert snapshot.torch_releasable_bytes is None  # only on request


def test_cheap_snapshot_skips_peak_and_system() -> None:
    snapshot = Probes().snapshot(host_peak=False, system=False)
    assert snapshot.host_rss_bytes is not None
    assert snapshot.host_peak_rss_bytes is None
    assert snapshot.system_available_bytes is None


def test_torch_fields_without_cuda_say_why() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the gpu tests cover it")
    snapshot = Probes().snapshot(releasable=True)
    assert snapshot.torch_allocated_bytes is None
    assert snapshot.torch_releasable_bytes is None
    assert "CUDA is not available" in (snapshot.torch_reason or "")


def test_non_torch_gpu_memory_is_process_minus_reserved() -> None:
    both = Snapshot(0.0, 0.0, nvml_process_used_bytes=1000, torch_reserved_bytes=300)
    assert both.non_torch_gpu_bytes == 700
    assert Snapshot(0.0, 0.0, nvml_process_used_bytes=1000).non_torch_gpu_bytes is None


UNRESETTABLE_CHILD = """
import json
from monitoring import HostProbe, Sampler, Tracker
probe = HostProbe()
ok = probe.reset_peak()
tracker = Tracker()
with tracker.track("synthesis") as bare:
    pass
with Sampler(interval_s=0.01) as sampler:
    with Tracker(sampler=sampler).track("synthesis") as sampled:
        sampler.sample_once()
print(json.dumps({
    "reset": ok, "resettable": probe.peak_resettable,
    "bare_peak": bare.record.peaks.host_rss_bytes,
    "sampled_source": sampled.record.peaks.host_rss_source,
    "sampled_peak": sampled.record.peaks.host_rss_bytes,
}))
"""


@linux_only
def test_peak_not_resettable_in_read_only_proc(run_python: RunPython) -> None:
    """A child in its own mount namespace with /proc read-only, as in a locked-down container.

    Nothing is faked: the kernel refuses the clear_refs write. Needs ``unshare`` and the right to
    create a mount namespace (root or CAP_SYS_ADMIN); skipped otherwise.
    """
    if shutil.which("unshare") is None:
        pytest.skip("no unshare command")
    script = 'mount -o remount,bind,ro /proc && exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    done = run_python(UNRESETTABLE_CHILD, prefix=prefix)
    if done.returncode != 0 and "python" not in done.stderr.lower():
        pytest.skip(f"cannot make /proc read-only here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reset"] is False
    assert result["resettable"] is False
    assert result["bare_peak"] is None  # no exact peak, and no sampler to estimate one
    assert result["sampled_source"] == "sampler"
    assert result["sampled_peak"] > 0


def test_overlapping_events_keep_the_outer_host_peak_exact(
    resident_block: Callable[[int], mmap.mmap],
) -> None:
    """VmHWM is one per process: an event that starts while another is open must not reset it
    (that would cut the outer event's peak short); the inner one's peak is an upper bound."""
    from monitoring import Tracker

    tracker = Tracker()
    with tracker.track("synthesis", "outer") as outer:
        resident_block(96 * MiB).close()  # +96 MiB, then freed inside the outer event
        with tracker.track("synthesis", "inner") as inner:
            pass
    if outer.record.peaks.host_rss_source is None:
        return  # no /proc on this system
    assert outer.record.peaks.host_rss_source == "vmhwm"
    assert inner.record.peaks.host_rss_source == "vmhwm-shared"
    rise = outer.record.peaks.host_rss_bytes - outer.record.before.host_rss_bytes
    assert rise > 80 * 2**20  # the inner event did not reset the peak the outer one saw
    with tracker.track("synthesis", "alone") as alone:
        pass
    assert alone.record.peaks.host_rss_source == "vmhwm"  # the scopes closed again
