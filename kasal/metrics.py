"""Prometheus metrics of Kasal's processes, and the worker's ``/metrics`` server.

The API counts requests and starts; workers count what runs: executions finished by
state, task durations and retries, LLM calls, tokens and latency by model, tool calls by
tool, human-input waits, journal replays. A worker's ``/metrics`` also carries the Temporal
SDK's own worker metrics (``temporal_*``), read from the SDK runtime's Prometheus endpoint
on a private localhost port and served together.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TASK_BUCKETS = (0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

# -- every process -----------------------------------------------------------------------
GC_PAUSES = Histogram(
    "kasal_gc_pause_seconds",
    "Python's cyclic garbage collections by generation (2: full), each stopping the process",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

# -- API --------------------------------------------------------------------------------------
HTTP_REQUESTS = Histogram(
    "kasal_http_request_duration_seconds",
    "API request latency by route template, method and status code",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
EXECUTIONS_STARTED = Counter("kasal_executions_started", "Executions started through the API")

# -- workers ------------------------------------------------------------------------------
EXECUTIONS_FINISHED = Counter(
    "kasal_executions_finished", "Executions recorded as finished, by final state", ["state"]
)
TASK_DURATION = Histogram(
    "kasal_task_duration_seconds",
    "Duration of task attempts (and manager steps), by outcome",
    ["kind", "outcome"],
    buckets=TASK_BUCKETS,
)
TASK_RETRIES = Counter("kasal_task_retries", "Task attempts after the first (retries)", ["kind"])
LLM_CALLS = Counter(
    "kasal_llm_calls", "LLM calls by model (replayed: from the journal)", ["model", "replayed"]
)
LLM_TOKENS = Counter(
    "kasal_llm_tokens", "LLM tokens paid for, by model and kind", ["model", "kind"]
)
LLM_LATENCY = Histogram(
    "kasal_llm_latency_seconds", "LLM call latency by model", ["model"], buckets=LATENCY_BUCKETS
)
TOOL_CALLS = Counter("kasal_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"])
HUMAN_INPUT_WAITS = Counter(
    "kasal_human_input_waits", "Times an execution waited for human input (recorded at its end)"
)
JOURNAL_REPLAYS = Counter(
    "kasal_journal_replays", "LLM responses replayed from the journal instead of paid again"
)


def exposition(extra_url: str | None = None) -> bytes:
    """This process's metrics in the Prometheus text format, followed by those served at
    ``extra_url`` (the Temporal SDK runtime's endpoint), if any."""
    body = generate_latest()
    if extra_url:
        try:
            with urllib.request.urlopen(extra_url, timeout=2) as response:  # noqa: S310
                body += response.read()
        except Exception as exc:  # the SDK's part missing is no reason to serve nothing
            log.warning("Temporal SDK metrics unavailable at %s: %s", extra_url, exc)
    return body


class MetricsServer:
    """``GET /metrics`` on ``host:port`` in a daemon thread (a worker has no web server)."""

    def __init__(self, host: str, port: int, sdk_metrics_url: str | None = None) -> None:
        sdk = sdk_metrics_url

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exposition(sdk)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # scrapes every few seconds would drown the log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> MetricsServer:
        """Serve until :meth:`stop`."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
