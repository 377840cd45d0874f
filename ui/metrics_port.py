"""The Streamlit app's ``/metrics`` on a side port, for Prometheus (off unless asked for).

``GLMTTS_METRICS_PORT=9464 streamlit run streamlit_app.py`` serves, on
``http://127.0.0.1:9464/metrics``, the same figures as the HTTP service's ``/metrics``: memory
gauges read at scrape time (NVML, torch allocator, host) and the models every browser session of
this process holds. One exporter per process, however many sessions call
:func:`start_metrics_port`: the first call starts it, the others get the same one.

It listens on 127.0.0.1 only: on a fleet, run the Prometheus agent (or a reverse proxy) on the
machine, as for any exporter bound to loopback.

Nothing here draws on the page, so this module does not import Streamlit.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # prometheus_client is imported only when the port is asked for
    from monitoring.metrics import MemoryMetrics

log = logging.getLogger(__name__)

#: Environment variable with the side port; unset, empty or 0: no exporter.
PORT_ENV = "GLMTTS_METRICS_PORT"
ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class MetricsPort:
    """The running exporter.

    Attributes:
        port: TCP port on 127.0.0.1.
        metrics: Its metrics; every synthesis session of the app feeds its events to it
            (``metrics.observe`` is a sink of their trackers).
        server: The HTTP server (``server.shutdown()`` stops it).
        thread: Its daemon thread.
    """

    port: int
    metrics: MemoryMetrics
    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{ADDRESS}:{self.port}/metrics"


_LOCK = threading.Lock()
_RUNNING: MetricsPort | None = None
_FAILED: str | None = None


def port_from_env(environ: dict[str, str] | None = None) -> int | None:
    """The side port ``$GLMTTS_METRICS_PORT`` asks for, or None (unset, empty, 0, invalid:
    an invalid value is logged once, never fatal)."""
    value = (environ if environ is not None else os.environ).get(PORT_ENV, "").strip()
    if not value or value == "0":
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        log.warning("%s=%r is not a TCP port (1-65535): no metrics side port", PORT_ENV, value)
        return None
    return int(value)


def start_metrics_port(port: int | None = None) -> MetricsPort | None:
    """Start the exporter once per process; return it, or None when off or impossible.

    Args:
        port: Port to use; None: ``$GLMTTS_METRICS_PORT`` (off when unset).

    A port already in use is logged once and gives None (the app keeps running); later calls
    do not retry.
    """
    global _RUNNING, _FAILED
    wanted = port if port is not None else port_from_env()
    if wanted is None:
        return None
    with _LOCK:
        if _RUNNING is not None:
            if _RUNNING.port != wanted:
                log.info("metrics side port already on %d; %d not opened", _RUNNING.port, wanted)
            return _RUNNING
        if _FAILED is not None:
            return None
        from prometheus_client import start_http_server

        from glmtts.telemetry import new_metrics

        metrics = new_metrics()
        try:
            server, thread = start_http_server(wanted, addr=ADDRESS, registry=metrics.registry)
        except OSError as exc:
            _FAILED = f"cannot listen on {ADDRESS}:{wanted}: {exc.strerror or exc}"
            log.warning("no metrics side port: %s", _FAILED)
            return None
        _RUNNING = MetricsPort(wanted, metrics, server, thread)
        log.info("metrics side port: %s", _RUNNING.url)
        return _RUNNING


def running() -> MetricsPort | None:
    """The exporter of this process, if one runs."""
    return _RUNNING


def stop_metrics_port() -> None:
    """Stop the exporter (tests; the process's end stops it anyway)."""
    global _RUNNING, _FAILED
    with _LOCK:
        exporter, _RUNNING, _FAILED = _RUNNING, None, None
    if exporter is not None:
        exporter.server.shutdown()
        exporter.server.server_close()
