"""``monitoring.metrics`` with made-up readings and records, the Streamlit side-port exporter,
and the shipped Grafana dashboard and Prometheus configuration."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring import GpuMemory, Snapshot, Tracker
from monitoring.metrics import MemoryMetrics, ModelInfo

ROOT = Path(__file__).resolve().parents[2]
GiB = 2**30


def gpu_snapshot() -> Snapshot:
    gpu = GpuMemory(index=0, name="NVIDIA A10G", uuid="GPU-abc", total_bytes=24 * GiB,
                    used_bytes=7 * GiB, free_bytes=17 * GiB, reserved_bytes=None,
                    memory_api="v2", process_used_bytes=6 * GiB)
    return Snapshot(monotonic_s=1.0, wall_s=2.0, gpu_index=0, nvml_device_total_bytes=24 * GiB,
                    nvml_device_used_bytes=7 * GiB, nvml_device_free_bytes=17 * GiB,
                    nvml_process_used_bytes=6 * GiB, torch_allocated_bytes=4 * GiB,
                    torch_reserved_bytes=5 * GiB, torch_active_bytes=4 * GiB,
                    torch_inactive_split_bytes=GiB // 4, torch_num_alloc_retries=3,
                    torch_num_ooms=1, host_rss_bytes=2 * GiB, system_available_bytes=30 * GiB,
                    system_total_bytes=64 * GiB, gpus=(gpu,))


def samples(metrics: MemoryMetrics) -> dict:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_gauges_are_read_at_scrape_time() -> None:
    reads = []

    def snapshot() -> Snapshot:
        reads.append(1)
        return gpu_snapshot()

    models = [ModelInfo("piper", "cuda:0", 60_000_000), ModelInfo("piper", "cuda:0", 60_000_000)]
    metrics = MemoryMetrics("t", snapshot=snapshot, models=lambda: models)
    assert reads == []  # registering reads nothing
    values = samples(metrics)
    assert len(reads) == 1
    gpu = (("gpu", "0"), ("name", "NVIDIA A10G"), ("uuid", "GPU-abc"))
    assert values[("t_nvml_device_memory_used_bytes", gpu)] == 7 * GiB
    assert values[("t_nvml_device_memory_free_bytes", gpu)] == 17 * GiB
    assert values[("t_nvml_process_memory_used_bytes", gpu)] == 6 * GiB
    assert values[("t_torch_reserved_bytes", ())] == 5 * GiB
    assert values[("t_torch_inactive_split_bytes", ())] == GiB // 4
    assert values[("t_non_torch_gpu_bytes", ())] == GiB
    assert values[("t_torch_alloc_retries_total", ())] == 3
    assert values[("t_host_rss_bytes", ())] == 2 * GiB
    assert values[("t_models_loaded", ())] == 2
    assert values[("t_model_weights_bytes", (("device", "cuda:0"), ("model", "piper")))] == 1.2e8
    assert values[("t_probe_available", (("probe", "nvml"),))] == 1
    samples(metrics)
    assert len(reads) == 2


def test_unknown_figures_are_left_out_not_zero() -> None:
    bare = Snapshot(monotonic_s=1.0, wall_s=2.0, host_rss_bytes=100, nvml_reason="no driver")
    values = samples(MemoryMetrics("t", snapshot=lambda: bare))
    names = {name for name, _ in values}
    assert "t_torch_reserved_bytes" not in names and "t_nvml_device_memory_used_bytes" not in names
    assert values[("t_probe_available", (("probe", "nvml"),))] == 0
    assert values[("t_host_rss_bytes", ())] == 100
    assert "t_host_heap_free_bytes" not in names  # no glibc figures: left out
    assert values[("t_probe_available", (("probe", "host_heap"),))] == 0


def test_heap_gauges_come_from_this_process_heap() -> None:
    """The real probes of this (glibc) process: the free memory glibc keeps and its live
    blocks, as gauges (heap figures where the C library gives them)."""
    from monitoring import heap

    values = samples(MemoryMetrics("t"))
    if not heap.available():
        assert ("t_host_heap_in_use_bytes", ()) not in values
        return
    assert values[("t_host_heap_in_use_bytes", ())] > 2**20
    assert values[("t_host_heap_free_bytes", ())] >= 0
    assert values[("t_probe_available", (("probe", "host_heap"),))] == 1


def test_events_cleanups_and_recoveries_are_counted() -> None:
    metrics = MemoryMetrics("t", snapshot=lambda: Snapshot(monotonic_s=0.0, wall_s=0.0))
    tracker = Tracker()
    with tracker.track("synthesis", "x") as handle:
        pass
    record = handle.record
    assert metrics.observe(record) is True
    assert metrics.observe(record) is False  # once per event id
    failed = dataclasses.replace(record, event_id="other", oom=True,
                                 error_type="MemoryError", error_message="x")
    metrics.observe(failed)
    from monitoring import cleanup

    result = cleanup.light(tracker=tracker)
    metrics.observe(result.event)
    retry = dataclasses.replace(record, event_id="retry", features={"retry_of": "other"})
    metrics.observe(retry)
    values = samples(metrics)
    assert values[("t_events_total", (("kind", "synthesis"), ("outcome", "ok")))] == 2
    assert values[("t_events_total", (("kind", "synthesis"), ("outcome", "oom")))] == 1
    assert values[("t_out_of_memory_total", (("kind", "synthesis"),))] == 1
    assert values[("t_events_total", (("kind", "cleanup"), ("outcome", "ok")))] == 1
    assert values[("t_cleanups_total", (("level", "light"),))] == 1
    assert values[("t_cleanup_freed_bytes_total", (("figure", "host_rss"), ("level", "light")))
                  ] >= 0
    assert values[("t_oom_recoveries_total", (("result", "recovered"),))] == 1
    assert values[("t_event_duration_seconds_count", (("kind", "synthesis"),))] == 3


def test_two_registries_do_not_clash() -> None:
    one, two = MemoryMetrics("t"), MemoryMetrics("t")
    assert one.registry is not two.registry
    assert b"t_host_rss_bytes" in one.exposition() and b"t_host_rss_bytes" in two.exposition()


# ----------------------------------------------------------------------------- side port
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_side_port_starts_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import metrics_port

    metrics_port.stop_metrics_port()
    monkeypatch.delenv(metrics_port.PORT_ENV, raising=False)
    assert metrics_port.start_metrics_port() is None  # off by default
    port = free_port()
    monkeypatch.setenv(metrics_port.PORT_ENV, str(port))
    try:
        first = metrics_port.start_metrics_port()
        assert first is not None and first.port == port
        assert metrics_port.start_metrics_port() is first  # one per process
        assert metrics_port.start_metrics_port(free_port()) is first
        page = httpx.get(first.url, timeout=10)
        assert page.status_code == 200
        assert "glmtts_host_rss_bytes" in page.text and "glmtts_models_loaded" in page.text
        assert first.server.server_address[0] == "127.0.0.1"
    finally:
        metrics_port.stop_metrics_port()


@pytest.mark.parametrize(("value", "port"), [("", None), ("0", None), ("abc", None),
                                             ("70000", None), ("9464", 9464)])
def test_side_port_from_env(value: str, port: int | None) -> None:
    from ui.metrics_port import PORT_ENV, port_from_env

    assert port_from_env({PORT_ENV: value}) == port


def test_side_port_in_use_is_not_fatal() -> None:
    from ui import metrics_port

    metrics_port.stop_metrics_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            assert metrics_port.start_metrics_port(busy.getsockname()[1]) is None
        finally:
            metrics_port.stop_metrics_port()


# ----------------------------------------------------------------------------- deploy files
def exported_names() -> set[str]:
    """Every sample name the service's metrics can produce (histogram parts included)."""
    from types import SimpleNamespace

    from glmtts.telemetry import first_audio_histogram
    from service.admission import Admission
    from service.gauges import install_gauges

    metrics = MemoryMetrics("glmtts", snapshot=gpu_snapshot,
                            models=lambda: [ModelInfo("piper", "cuda:0", 1)])
    first_audio_histogram(metrics)  # the service's own instruments, as the service adds them
    install_gauges(SimpleNamespace(metrics=metrics, admitter=Admission(
        lambda: 2**30, budget_bytes=None, capacity=None)))
    names = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        names.add(family.name)
        kind = family.type
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(kind, []))
    return names


def test_dashboard_charts_only_metrics_that_exist() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in re.findall(r"\bglmtts_[a-z_]+\b", expr)}
    missing = used - exported_names()
    assert not missing, missing
    for wanted in ("glmtts_nvml_device_memory_used_bytes", "glmtts_torch_reserved_bytes",
                   "glmtts_host_rss_bytes", "glmtts_event_duration_seconds_bucket",
                   "glmtts_cleanup_freed_bytes_total", "glmtts_oom_recoveries_total",
                   "glmtts_speech_first_audio_seconds_bucket", "glmtts_admission_queue_length",
                   "glmtts_admission_admitted_bytes", "glmtts_idle_releases_total"):
        assert wanted in used, wanted
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "instance"}


def test_prometheus_example_scrapes_the_service() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML: present with the dev requirements
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"glmtts-service", "glmtts-streamlit"} <= set(jobs)
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
