"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables, and JSON logs.

Off unless the operator configures an exporter: ``OTEL_TRACES_EXPORTER`` (``otlp`` or
``console``) or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` turns it off again.
The service name, resource attributes, sampler, protocol, headers and batch settings are
the SDK's own ``OTEL_*`` variables.

When on, one trace follows an execution across processes: the API's request span, the
Temporal client's start span, the workflow, each task activity, each LLM call and tool
call inside it (Temporal's ``TracingInterceptor`` carries the context in headers). Spans
carry no prompt or response text unless ``KASAL_OTEL_CAPTURE_CONTENT=true``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_provider: Any = None
_capture_content = False

#: Set by the code running a task attempt: what every log line of it names.
log_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "kasal_log_context", default=None
)


def tracing_requested() -> bool:
    """True if the environment configures a trace exporter (and does not disable the SDK)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(exporter or endpoint)


def configure_tracing(service_name: str, *, capture_content: bool = False) -> Any:
    """Install a tracer provider from the ``OTEL_*`` environment; None if tracing is off.

    Idempotent per process: the first call wins.
    """
    global _provider, _capture_content
    _capture_content = capture_content or _env_true(
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
    )
    if _provider is not None:
        return _provider
    if not tracing_requested():
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import OTEL_SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get(OTEL_SERVICE_NAME) else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("OpenTelemetry tracing on (%s)", service_name)
    return provider


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _exporters() -> list[Any]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    exporters: list[Any] = []
    for name in (n.strip() for n in names.split(",")):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                exporters.append(GrpcExporter())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                exporters.append(HttpExporter())
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported; use otlp or console", name)
    return exporters


def use_provider(provider: Any, *, capture_content: bool = False) -> None:
    """Trace with ``provider`` in this process (tests, embedders with their own pipeline);
    None turns Kasal's tracing off again."""
    global _provider, _capture_content
    _provider = provider
    _capture_content = capture_content


def provider() -> Any:
    """The tracer provider Kasal traces with, or None when tracing is off."""
    return _provider


def capture_content() -> bool:
    """True if spans may carry prompt and response text."""
    return _capture_content


def temporal_interceptors() -> list[Any]:
    """The Temporal client interceptors for tracing (none when tracing is off). On the
    client they apply to its workers too."""
    if _provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(_provider.get_tracer("temporalio"))]


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        return None

    def record_exception(self, exc: BaseException) -> None:
        return None

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextmanager
def span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
    """A span named ``name`` under the current one (a no-op when tracing is off)."""
    if _provider is None:
        yield _NoSpan()
        return
    tracer = _provider.get_tracer("kasal")
    with tracer.start_as_current_span(name, attributes=attributes or {}) as current:
        yield current


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span as hex, or None."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# -- structured logs --------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and, where known, the
    execution id, task, attempt, trace id and span id."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = log_context.get()
        if context:
            entry.update(context)
        ids = current_trace_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logs(level: int = logging.INFO) -> None:
    """Log JSON lines to stderr from the root logger (``KASAL_LOG_FORMAT=json``)."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own loggers keep their handlers unless told otherwise.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
