"""Sampler: bounded buffers, clean stop, peak windows, persistence, and a failing NVML."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pynvml
import pytest

from monitoring import NvmlProbe, Probes, Sampler, Store

GiB = 1024**3
DEADLINE_S = 20.0  # a guard against hanging, not a timing assertion


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def test_ring_buffer_never_exceeds_its_bound_and_stop_is_clean() -> None:
    sampler = Sampler(interval_s=0.001, maxlen=16).start()
    thread = sampler._thread
    assert sampler.running and thread is not None
    wait_for(lambda: sampler.sample_count >= 64, "64 samples")
    assert len(sampler.samples()) <= 16
    sampler.stop()
    assert not sampler.running
    # this sampler's thread (another test's app in this process may run a sampler of its own)
    assert not thread.is_alive()
    taken = sampler.sample_count
    assert len(sampler.samples()) == 16 == sampler.maxlen
    sampler.stop()  # idempotent
    assert sampler.sample_count == taken
    stamps = [s.monotonic_s for s in sampler.samples()]
    assert stamps == sorted(stamps)


def test_restart_after_stop() -> None:
    sampler = Sampler(interval_s=0.001, maxlen=8)
    with sampler:
        wait_for(lambda: sampler.sample_count >= 2, "first run")
    first = sampler.sample_count
    with sampler:
        wait_for(lambda: sampler.sample_count >= first + 2, "second run")
    assert not sampler.running


def test_reads_from_other_threads_while_sampling() -> None:
    sampler = Sampler(interval_s=0.001, maxlen=32).start()

    def read() -> int:
        longest = 0
        for _ in range(300):
            longest = max(longest, len(sampler.samples()))
            sampler.latest()
            sampler.markers()
        return longest

    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(read) for _ in range(3)]
        for i in range(50):
            sampler.mark("synthesis", "instant", label=str(i))
        longest = [reader.result() for reader in readers]  # re-raises a reader's error
    sampler.stop()
    assert max(longest) <= 32
    assert len(sampler.markers()) == 50


def test_markers_are_bounded_and_ordered() -> None:
    sampler = Sampler(max_markers=5)
    for i in range(20):
        sampler.mark("load", "start", label=f"m{i}", event_id=str(i))
    markers = sampler.markers()
    assert [m.label for m in markers] == [f"m{i}" for i in range(15, 20)]
    assert sampler.markers(since_monotonic_s=markers[-1].monotonic_s) == [markers[-1]]


def test_peak_window_keeps_the_largest_sample() -> None:
    sampler = Sampler()
    token = sampler.open_window()
    taken = [sampler.sample_once() for _ in range(3)]
    peaks = sampler.close_window(token)
    assert peaks.samples == 3
    assert peaks.host_rss_bytes == max(s.host_rss_bytes or 0 for s in taken)
    assert peaks.nvml_process_used_bytes is None or peaks.nvml_process_used_bytes >= 0
    empty = sampler.close_window(sampler.open_window())
    assert (empty.samples, empty.host_rss_bytes) == (0, None)


def test_nvml_peak_between_two_points(fake_nvml: type) -> None:
    """Stand-in NVML whose process usage rises and falls between the window's ends."""
    fake = fake_nvml()
    sampler = Sampler(Probes(nvml=NvmlProbe(fake)))
    sampler.sample_once()
    token = sampler.open_window()
    for used in (GiB, 3 * GiB, 2 * GiB):
        fake.gpus[0].processes = [(fake.gpus[0].processes[0][0], used)]
        sampler.sample_once()
    peaks = sampler.close_window(token)
    assert peaks.nvml_process_used_bytes == 3 * GiB
    assert peaks.samples == 3


def test_downsampled_timeline_goes_to_the_store() -> None:
    with Store(":memory:") as store:
        session = store.start_session("sampler")
        sampler = Sampler(store=store, session_id=session, persist_interval_s=3600)
        taken = [sampler.sample_once() for _ in range(5)]
        assert len(store.timeline()) == 0  # bucket not due yet
        sampler.stop()  # flushes the open bucket
        rows = store.timeline(session_id=session)
        assert len(rows) == 1
        assert rows["host_rss_bytes"][0] == max(s.host_rss_bytes or 0 for s in taken)
        lowest = min(s.system_available_bytes or 0 for s in taken)
        assert rows["system_available_bytes"][0] == lowest

        every = Sampler(store=store, session_id=session, persist_interval_s=0)
        for _ in range(6):
            every.sample_once()
        every.stop()
        assert len(store.timeline(session_id=session)) == 1 + 3


def test_failing_nvml_in_the_thread_logs_once_and_keeps_sampling(
    caplog: pytest.LogCaptureFixture, fake_nvml: type
) -> None:
    """Stand-in NVML: the GPU falls off the bus while the sampler thread runs."""
    caplog.set_level(logging.WARNING, logger="monitoring")
    fake = fake_nvml()
    sampler = Sampler(Probes(nvml=NvmlProbe(fake)), interval_s=0.001, maxlen=64).start()
    wait_for(lambda: sampler.sample_count >= 3, "good samples")
    assert sampler.latest().nvml_process_used_bytes == GiB
    fake.fail_code = pynvml.NVML_ERROR_GPU_IS_LOST
    calls = fake.memory_calls
    wait_for(lambda: fake.memory_calls >= calls + 20, "failing reads")
    counted = sampler.sample_count
    wait_for(lambda: sampler.sample_count >= counted + 5, "sampling after the fault")
    assert sampler.running
    latest = sampler.latest()
    assert latest.nvml_process_used_bytes is None
    assert latest.host_rss_bytes is not None
    sampler.stop()
    assert len([r for r in caplog.records if "NVML read failed" in r.getMessage()]) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Sampler(interval_s=0)
    with pytest.raises(ValueError, match="maxlen"):
        Sampler(maxlen=0)


def test_an_unexpected_probe_error_is_logged_once_and_sampling_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """A probe raising something it should have turned into None (as torch did while it was
    still being imported) must not end the thread."""
    import logging
    import time

    from monitoring import Sampler

    calls = {"n": 0}

    class Flaky:
        def snapshot(self, **_: object):
            calls["n"] += 1
            if calls["n"] <= 3:
                raise AttributeError("partially initialized module 'torch'")
            from monitoring import take_snapshot

            return take_snapshot()

    with caplog.at_level(logging.ERROR, logger="monitoring.sampler"):
        sampler = Sampler(Flaky(), interval_s=0.01).start()  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while sampler.sample_count < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        sampler.stop()
    assert sampler.sample_count >= 3
    assert len([r for r in caplog.records if "sampling failed" in r.message]) == 1
