"""NVML probe: the real library where there is no driver, and a fault-injecting stand-in.

Every test that passes ``FakeNvml`` fakes NVML only (see fake_nvml.py for why); everything else
(host probe, psutil, PID lookups) is real.
"""

from __future__ import annotations

import logging
import os

import pynvml
import pytest

from monitoring import NvmlProbe, NvmlUnavailableError, ProbeReadError, Probes

MiB = 1024**2
GiB = 1024**3
NO_SUCH_PID = 2**31 - 7  # above any Linux pid_max: no process has it in this namespace


def _real_nvml_missing() -> bool:
    return NvmlProbe().unavailable_reason is not None


@pytest.mark.skipif(not _real_nvml_missing(), reason="NVML works on this machine")
def test_missing_driver_is_recorded_once_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    """Real pynvml without a driver: a reason, one log line, no exception from background reads."""
    caplog.set_level(logging.DEBUG, logger="monitoring")
    probe = NvmlProbe()
    for _ in range(5):
        assert probe.try_read() is None
    assert "NVML" in (probe.unavailable_reason or "")
    with pytest.raises(NvmlUnavailableError) as raised:
        probe.read()
    assert raised.value.reason == probe.unavailable_reason
    assert len([r for r in caplog.records if r.name == "monitoring.nvml"]) == 1


@pytest.mark.skipif(not _real_nvml_missing(), reason="NVML works on this machine")
def test_snapshot_without_driver_has_none_and_reason() -> None:
    snapshot = Probes(nvml=NvmlProbe()).snapshot()
    assert snapshot.nvml_device_used_bytes is None
    assert snapshot.nvml_process_used_bytes is None
    assert snapshot.gpus == ()
    assert snapshot.nvml_reason
    assert snapshot.host_rss_bytes is not None
    assert snapshot.host_rss_bytes > 0


def test_reads_v2_memory_and_own_process(fake_nvml: type, fake_gpu: type) -> None:
    """Stand-in NVML: figures come through unchanged, v2 keeps driver-reserved memory apart."""
    fake = fake_nvml([fake_gpu(used=3 * GiB, reserved=400 * MiB, processes=[(os.getpid(), GiB)])])
    (gpu,) = NvmlProbe(fake).read()
    assert gpu.memory_api == "v2"
    assert (gpu.total_bytes, gpu.used_bytes, gpu.reserved_bytes) == (24 * GiB, 3 * GiB, 400 * MiB)
    assert gpu.free_bytes == 24 * GiB - 3 * GiB - 400 * MiB
    assert gpu.process_used_bytes == GiB
    assert gpu.name == "Fake GPU 0"


def test_old_driver_falls_back_to_v1(
    caplog: pytest.LogCaptureFixture, fake_nvml: type, fake_gpu: type
) -> None:
    """Stand-in NVML without nvmlDeviceGetMemoryInfo_v2: v1 figures, reserved unknown."""
    caplog.set_level(logging.INFO, logger="monitoring")
    probe = NvmlProbe(fake_nvml([fake_gpu(used=GiB, reserved=300 * MiB)], v2=False))
    for _ in range(3):
        (gpu,) = probe.read()
    assert gpu.memory_api == "v1"
    assert gpu.reserved_bytes is None
    assert gpu.used_bytes == GiB + 300 * MiB  # v1 counts the driver's reservation as used
    assert sum("using v1" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
        (pynvml.NVML_ERROR_UNKNOWN, "nvmlInit failed"),
    ],
)
def test_init_failures_give_a_reason_not_a_crash(code: int, words: str, fake_nvml: type) -> None:
    """Stand-in NVML whose nvmlInit fails."""
    probe = NvmlProbe(fake_nvml(init_error=code))
    assert words in (probe.unavailable_reason or "")
    assert probe.try_read() is None
    with pytest.raises(NvmlUnavailableError):
        probe.read()


def test_no_gpu_is_unavailable(fake_nvml: type) -> None:
    """Stand-in NVML that works but lists no GPU."""
    assert "sees no GPU" in (NvmlProbe(fake_nvml([])).unavailable_reason or "")


def test_gpu_lost_mid_session_degrades_to_none_and_logs_once(
    caplog: pytest.LogCaptureFixture, fake_nvml: type
) -> None:
    """Stand-in NVML that loses the GPU after a good read, then gets it back, then loses it."""
    caplog.set_level(logging.INFO, logger="monitoring")
    fake = fake_nvml()
    probe = NvmlProbe(fake)
    assert probe.try_read() is not None
    fake.fail_code = pynvml.NVML_ERROR_GPU_IS_LOST
    for _ in range(10):
        assert probe.try_read() is None
    assert "GPU is lost" in (probe.reason or "")
    with pytest.raises(ProbeReadError):
        probe.read()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    fake.fail_code = None
    assert probe.try_read() is not None
    assert probe.reason is None
    fake.fail_code = pynvml.NVML_ERROR_UNINITIALIZED  # driver unloaded: a new outage
    assert probe.try_read() is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "no longer initialised" in warnings[-1].getMessage()


def test_snapshot_after_gpu_lost_keeps_other_probes(fake_nvml: type) -> None:
    """Stand-in NVML fails; the host figures of the same snapshot are still real."""
    fake = fake_nvml()
    probes = Probes(nvml=NvmlProbe(fake))
    assert probes.snapshot().nvml_process_used_bytes == GiB
    fake.fail_code = pynvml.NVML_ERROR_GPU_IS_LOST
    snapshot = probes.snapshot()
    assert snapshot.nvml_device_used_bytes is None
    assert "GPU is lost" in (snapshot.nvml_reason or "")
    assert snapshot.host_rss_bytes is not None
    assert snapshot.host_rss_bytes > 0


def test_container_pid_namespace_gives_none_with_reason(fake_nvml: type, fake_gpu: type) -> None:
    """Stand-in NVML listing a host PID this PID namespace does not have (container case)."""
    probe = NvmlProbe(fake_nvml([fake_gpu(processes=[(NO_SUCH_PID, GiB)])]))
    (gpu,) = probe.read()
    assert gpu.process_used_bytes is None
    assert "PID namespace" in (gpu.process_reason or "")


def test_process_without_gpu_context_uses_zero(fake_nvml: type, fake_gpu: type) -> None:
    """Stand-in NVML listing only a visible other process (pid 1): this one holds nothing."""
    (gpu,) = NvmlProbe(fake_nvml([fake_gpu(processes=[(1, GiB)])])).read()
    assert gpu.process_used_bytes == 0
    assert gpu.process_reason is None


def test_process_list_without_permission(fake_nvml: type) -> None:
    """Stand-in NVML refusing the process lists: device figures stay, process is None."""
    fake = fake_nvml()
    fake.process_error = pynvml.NVML_ERROR_NO_PERMISSION
    (gpu,) = NvmlProbe(fake).read()
    assert gpu.used_bytes == 2 * GiB
    assert gpu.process_used_bytes is None
    assert "permission" in (gpu.process_reason or "")


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_UNKNOWN])
def test_a_failing_process_list_keeps_the_device_figures(fake_nvml: type, code: int) -> None:
    """Stand-in NVML whose process-list query fails (an old driver without the function): the
    device-wide figures of every GPU stay; only the per-process figure is None, with why."""
    fake = fake_nvml()
    fake.process_error = code
    probe = NvmlProbe(fake)
    (gpu,) = probe.read()
    assert gpu.used_bytes == 2 * GiB and gpu.total_bytes == 24 * GiB
    assert gpu.process_used_bytes is None and gpu.process_reason
    assert probe.try_read() is not None


def test_wddm_unknown_usage_is_none(fake_nvml: type, fake_gpu: type) -> None:
    """Stand-in NVML that lists this process without a byte count (Windows WDDM)."""
    (gpu,) = NvmlProbe(fake_nvml([fake_gpu(processes=[(os.getpid(), None)])])).read()
    assert gpu.process_used_bytes is None
    assert "WDDM" in (gpu.process_reason or "")


def test_watched_gpu_is_selectable(fake_nvml: type, fake_gpu: type) -> None:
    """Stand-in NVML with two GPUs: top-level fields follow ``gpu_index``."""
    pid = os.getpid()
    fake = fake_nvml([fake_gpu(used=GiB), fake_gpu(used=5 * GiB, processes=[(pid, 2 * GiB)])])
    first = Probes(nvml=NvmlProbe(fake)).snapshot()
    assert (first.gpu_index, first.nvml_device_used_bytes, first.nvml_process_used_bytes) == (
        0,
        GiB,
        0,
    )
    second = Probes(gpu_index=1, nvml=NvmlProbe(fake)).snapshot()
    assert (second.gpu_index, second.nvml_process_used_bytes) == (1, 2 * GiB)
    assert len(second.gpus) == 2
    missing = Probes(gpu_index=7, nvml=NvmlProbe(fake)).snapshot()
    assert missing.nvml_device_used_bytes is None
    assert "index 7" in (missing.nvml_reason or "")
