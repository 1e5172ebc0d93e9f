"""A worker's metrics endpoint: Kasal's metrics plus the Temporal SDK's worker metrics."""

from __future__ import annotations

import logging
from typing import Any

from kasal.settings import Settings

log = logging.getLogger(__name__)


def sdk_runtime(settings: Settings) -> tuple[Any, str | None]:
    """A Temporal SDK runtime exporting its metrics in the Prometheus format on a private
    localhost port, and that endpoint's URL; (None, None) when the worker serves no metrics.

    The SDK serves its own endpoint; the worker's ``/metrics`` reads it and serves both
    parts, so one scrape target per worker gets everything.
    """
    if not settings.worker_metrics_port:
        return None, None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    from kasal.client import free_port

    bind = f"127.0.0.1:{free_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))
    return runtime, f"http://{bind}/metrics"


def start_metrics_server(settings: Settings, sdk_metrics_url: str | None) -> Any:
    """Serve ``/metrics`` on ``KASAL_WORKER_METRICS_PORT`` (None when it is 0)."""
    if not settings.worker_metrics_port:
        return None
    from kasal.metrics import MetricsServer

    server = MetricsServer(
        settings.worker_metrics_host, settings.worker_metrics_port, sdk_metrics_url
    ).start()
    log.info("worker metrics on http://%s:%s/metrics", settings.worker_metrics_host, server.port)
    return server
