"""GPU checks: allocator and NVML figures against known allocations (run on a CUDA machine)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from monitoring import Probes, Sampler, Tracker, cleanup

RunPython = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.gpu

MiB = 1024**2
SIZE = 256 * MiB
PAGE_SLACK = 2 * MiB  # NVML counts whole device pages


@pytest.fixture
def torch() -> Iterator[ModuleType]:
    import torch

    torch.zeros(1, device="cuda")  # CUDA context first, so it is not part of any delta
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    yield torch
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def test_allocator_delta_is_the_allocation(torch: ModuleType) -> None:
    with Tracker().track("synthesis") as handle:
        kept = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
    record = handle.record
    breakdown = record.breakdown
    assert breakdown.torch_allocated.retained_bytes == SIZE
    assert breakdown.torch_reserved.retained_bytes >= SIZE
    assert record.peaks.torch_allocated_bytes == record.before.torch_allocated_bytes + SIZE
    assert record.after.torch_active_bytes >= SIZE
    del kept


def test_transient_peak_releasable_and_light_cleanup(torch: ModuleType) -> None:
    tracker = Tracker()
    with tracker.track("synthesis") as handle:
        scratch = torch.empty(2 * SIZE, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        del scratch
    allocated = handle.record.breakdown.torch_allocated
    assert allocated.retained_bytes == 0
    assert allocated.transient_bytes == 2 * SIZE
    assert tracker.probes.allocator.releasable_bytes() >= 2 * SIZE

    result = cleanup.light(tracker=tracker)
    assert result.empty_cache_called
    assert result.predicted_releasable_bytes >= 2 * SIZE
    assert result.torch_reserved_freed_bytes >= 2 * SIZE
    assert result.event.after.torch_releasable_bytes == 0
    if result.event.before.nvml_process_used_bytes is not None:
        assert result.nvml_process_freed_bytes >= 2 * SIZE - PAGE_SLACK


def test_nvml_sees_the_allocation(torch: ModuleType) -> None:
    probes = Probes()
    before = probes.snapshot()
    if before.nvml_process_used_bytes is None:
        pytest.skip(f"NVML cannot see this process: {before.nvml_reason}")
    kept = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    after = probes.snapshot()
    process_delta = after.nvml_process_used_bytes - before.nvml_process_used_bytes
    assert SIZE - PAGE_SLACK <= process_delta <= SIZE + 64 * MiB
    assert after.nvml_device_used_bytes - before.nvml_device_used_bytes >= SIZE - 16 * MiB
    assert after.non_torch_gpu_bytes is not None
    assert after.non_torch_gpu_bytes > 0  # the CUDA context at least
    watched = next(gpu for gpu in after.gpus if gpu.index == after.gpu_index)
    assert watched.process_used_bytes == after.nvml_process_used_bytes
    assert watched.total_bytes == after.nvml_device_total_bytes
    del kept


def test_sampler_catches_the_nvml_peak(torch: ModuleType) -> None:
    sampler = Sampler(interval_s=0.01).start()
    tracker = Tracker(sampler=sampler)
    try:
        with tracker.track("synthesis") as handle:
            scratch = torch.empty(4 * SIZE, dtype=torch.uint8, device="cuda")
            torch.cuda.synchronize()
            seen = sampler.sample_count
            deadline = time.monotonic() + 20
            while sampler.sample_count < seen + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            del scratch
            torch.cuda.empty_cache()
    finally:
        sampler.stop()
    record = handle.record
    if record.before.nvml_process_used_bytes is None:
        pytest.skip(f"NVML cannot see this process: {record.before.nvml_reason}")
    nvml = record.breakdown.nvml_process
    assert nvml.peak_delta_bytes >= 4 * SIZE - PAGE_SLACK
    assert nvml.transient_bytes >= 4 * SIZE - PAGE_SLACK


def test_cuda_out_of_memory_is_flagged(torch: ModuleType) -> None:
    too_much = 2 * torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(torch.cuda.OutOfMemoryError), Tracker().track("synthesis") as handle:
        torch.empty(too_much, dtype=torch.uint8, device="cuda")
    record = handle.record
    assert record.oom
    assert record.after.torch_num_ooms == record.before.torch_num_ooms + 1


def test_probes_never_create_a_cuda_context(run_python: RunPython) -> None:
    """A fresh process that imports torch and reads every probe has no CUDA context after."""
    done = run_python(
        "import json, torch; from monitoring import Probes; "
        "s = Probes().snapshot(releasable=True); "
        "print(json.dumps([torch.cuda.is_initialized(), s.torch_allocated_bytes, "
        "s.nvml_process_used_bytes]))"
    )
    assert done.returncode == 0, done.stderr
    initialised, allocated, process_used = json.loads(done.stdout)
    assert initialised is False
    assert allocated == 0
    assert process_used in (0, None)
