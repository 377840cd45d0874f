"""What this process tells Prometheus, in one place: the metric namespace, the models every
session holds, and the process's one :class:`~monitoring.metrics.MemoryMetrics`.

The app (its side port) and the HTTP service both build their metrics here and hand
``metrics.observe`` to every synthesis session as an event sink, so both count the same events
the same way: the tracker gives each finished record to the store, the session's history and
the metrics, and nothing keeps a second history.
"""

from __future__ import annotations

from typing import Any

from monitoring.metrics import MemoryMetrics, ModelInfo

#: Namespace of every metric the app and the service export (``glmtts_host_rss_bytes``...).
METRICS_NAMESPACE = "glmtts"


def process_models() -> list[ModelInfo]:
    """Every model this process holds (all sessions), for the metrics."""
    from glmtts.registry import loaded_models

    return [ModelInfo(m.engine, m.device, m.weights_bytes) for m in loaded_models()]


def new_metrics() -> MemoryMetrics:
    """Metrics of this process: memory gauges read at scrape time, the models held, and event
    counters fed by :meth:`MemoryMetrics.observe` (a tracker sink)."""
    return MemoryMetrics(METRICS_NAMESPACE, models=process_models)


#: Buckets of the time to first audio, in seconds (a sentence on a CPU takes 0.1-2 s).
FIRST_AUDIO_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


def first_audio_histogram(metrics: MemoryMetrics) -> Any:
    """``glmtts_speech_first_audio_seconds{stream}`` in ``metrics``' registry: from a speech
    request's arrival to its first audio bytes going out (``stream``: ``none`` for a whole
    file, ``audio`` or ``sse`` for a stream)."""
    from prometheus_client import Histogram

    return Histogram("speech_first_audio_seconds", "Seconds from a speech request's arrival to "
                     "its first audio going out, by stream format (none: the whole file)",
                     ("stream",), namespace=METRICS_NAMESPACE, registry=metrics.registry,
                     buckets=FIRST_AUDIO_BUCKETS)
