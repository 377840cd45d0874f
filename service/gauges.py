"""The service's own Prometheus gauges: the admission queue and budget, and the idle release.

Read when Prometheus scrapes (callbacks), in the same registry as the memory figures:
``glmtts_admission_queue_length``, ``glmtts_admission_running``,
``glmtts_admission_admitted_bytes`` (predicted bytes of the syntheses running now),
``glmtts_admission_max_admitted_bytes`` (the most ever admitted at once),
``glmtts_admission_budget_bytes`` (NaN while unknown), and the idle release's events as
``glmtts_idle_releases_total{tier}`` (a counter, in :mod:`service.idle`).
"""

from __future__ import annotations

from typing import Any

from glmtts.telemetry import METRICS_NAMESPACE


def install_gauges(service: Any) -> None:
    """Register the admission gauges of ``service`` (a :class:`~service.runtime.Service`)."""
    from prometheus_client import Counter, Gauge

    admitter = service.admitter
    reg, ns = service.metrics.registry, METRICS_NAMESPACE

    def gauge(name: str, text: str, read: Any) -> None:
        Gauge(name, text, namespace=ns, registry=reg).set_function(read)

    gauge("admission_queue_length", "Syntheses waiting for memory (or their turn)",
          lambda: admitter.queued)
    gauge("admission_running", "Syntheses admitted and running now", lambda: admitter.running)
    gauge("admission_admitted_bytes", "Predicted peak bytes of the syntheses running now",
          lambda: admitter.admitted_bytes)
    gauge("admission_max_admitted_bytes", "The most predicted peak bytes admitted at once",
          lambda: admitter.max_admitted_bytes)
    def budget() -> float:
        found = admitter.budget()[0]
        return float("nan") if found is None else float(found)

    gauge("admission_budget_bytes", "The admission's memory budget (NaN while unknown)",
          budget)
    service.idle_counter = Counter(
        "idle_releases", "Idle releases run, by tier (1 light, 2 unload, 3 worker restart)",
        ("tier",), namespace=ns, registry=reg)
