"""A real Prometheus (Debian's package) scrapes the service and the app's side port on loopback,
and the series are read back through its HTTP API: the names, types and labels we export are
what Prometheus accepts, not only what our own parser reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.browser.test_app_in_chromium import CHROMIUM, FLAGS, _free_port, _idle, running_app

PROMETHEUS = shutil.which("prometheus")

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not "
                                 "installed (scripts/run-tests.sh installs it)"),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Debian chromium")]


def _api(base: str, path: str, **params: str) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}/api/v1/{path}{query}", timeout=10) as resp:
        answer = json.load(resp)
    assert answer["status"] == "success", answer
    return answer["data"]


def _open_app_once(url: str) -> None:
    """One browser session: the app starts its side port with its first page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            _idle(page)
        finally:
            browser.close()


def test_prometheus_scrapes_both_endpoints(tmp_path: Path, launch) -> None:
    service = launch(tmp_path / "service", "--preload")
    side_port = _free_port()
    prom_port = _free_port()
    service_target = service.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: glmtts-service
    static_configs: [{{targets: ["{service_target}"]}}]
  - job_name: glmtts-streamlit
    static_configs: [{{targets: ["127.0.0.1:{side_port}"]}}]
""")
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{prom_port}"
    try:
        with service.client() as client:  # one synthesis: the event series have samples
            assert client.post("/v1/synthesize", json={"text": "Scrape me.", "seed": 1}
                               ).status_code == 200
        (tmp_path / "app").mkdir()
        with running_app(tmp_path / "app", env={"GLMTTS_METRICS_PORT": str(side_port)}) as url:
            _open_app_once(url)
            deadline = time.monotonic() + 90
            targets: list[dict] = []
            while time.monotonic() < deadline:
                try:
                    targets = _api(base, "targets")["activeTargets"]
                except OSError:
                    targets = []
                if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                    break
                time.sleep(1)
            assert {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets} == {
                "glmtts-service": ("up", ""), "glmtts-streamlit": ("up", "")}
            time.sleep(2)  # one more scrape each after both were up
            rss = _api(base, "query", query="glmtts_host_rss_bytes")["result"]
            assert {r["metric"]["job"] for r in rss} == {"glmtts-service", "glmtts-streamlit"}
            assert all(float(r["value"][1]) > 10 * 2**20 for r in rss)
        events = _api(base, "query", query='glmtts_events_total{job="glmtts-service"}')["result"]
        by_kind = {(r["metric"]["kind"], r["metric"]["outcome"]): float(r["value"][1])
                   for r in events}
        assert by_kind.get(("synthesis", "ok"), 0) >= 1, by_kind
        buckets = _api(base, "query",
                       query='count(glmtts_event_duration_seconds_bucket{job="glmtts-service"})')
        assert float(buckets["result"][0]["value"][1]) > 1
        metadata = _api(base, "metadata")
        types = {name: entries[0]["type"] for name, entries in metadata.items()}
        assert types["glmtts_event_duration_seconds"] == "histogram"
        assert types["glmtts_host_rss_bytes"] == "gauge"
        assert types["glmtts_events_total"] == "counter"
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
        log.close()
        code = service.stop()
    assert code == 0, service.output()
