"""The API's metrics (``GET /metrics``, request latency by route), its tracing (FastAPI
instrumentation under Kasal's tracer provider) and, opt-in, JSON logs."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kasal import metrics, telemetry
from kasal.settings import Settings

#: Paths not traced (scrapes and probes every few seconds would bury real traces).
UNTRACED = "/metrics,/healthz,/readyz"


def route_template(scope: Scope) -> str | None:
    """The template of the route that served ``scope`` (``/api/v1/executions/{execution_id}``),
    or None if none matched.

    The route FastAPI leaves in the scope knows only its path within its router, not the
    prefix it was included under; each route's full template is worked out once, from the
    app's routes, and looked up by that route. A route the table cannot name (one included
    under two prefixes, or none left in the scope) is found by matching the app's routes
    again, as the OpenTelemetry instrumentation does: some 40 regular expressions per
    request, which the lookup spares every request that matched a route.
    """
    app = scope.get("app")
    if app is None:
        return None
    table: _RouteTable | None = getattr(app.state, "kasal_route_table", None)
    if table is None:
        table = app.state.kasal_route_table = _RouteTable(app.routes)
    return table.template(scope)


class _RouteTable:
    """The app's routes with their full paths, and by the route object FastAPI serves."""

    def __init__(self, routes: list[Any]) -> None:
        self.contexts = _matchable(routes)
        # By identity: Starlette's routes compare by path and endpoint, and are unhashable.
        # The contexts hold every route, so no id is reused while the table lives.
        paths: dict[int, set[str | None]] = {}
        for context in self.contexts:
            route = getattr(context, "original_route", context)
            paths.setdefault(id(route), set()).add(getattr(context, "path", None))
        self.by_route = {ident: next(iter(p)) for ident, p in paths.items() if len(p) == 1}

    def template(self, scope: Scope) -> str | None:
        served = scope.get("route")
        if served is not None:
            path = self.by_route.get(id(served))
            if path is not None:
                return path
        for route in self.contexts:
            try:
                match, _ = route.matches(scope)
            except Exception:  # a route kind that cannot match this scope
                continue
            if match == Match.FULL:
                return getattr(route, "path", None)
        return None


def _matchable(routes: list[Any]) -> list[Any]:
    """The app's routes with their full paths (FastAPI nests included routers)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: routes are matchable as they are
        return list(routes)
    return list(iter_route_contexts(routes))


class MetricsMiddleware:
    """Observe each HTTP request's latency by method, route template and status code.

    The template (``/api/v1/executions/{execution_id}``), not the path: one series per
    route, however many ids there are. Unmatched paths count as ``unmatched``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = [500]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = route_template(scope) or "unmatched"
            metrics.HTTP_REQUESTS.labels(
                method=scope["method"], route=route, status=str(status[0])
            ).observe(time.perf_counter() - began)


async def metrics_endpoint() -> Response:
    """Prometheus metrics of this API process."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Metrics, ``/metrics``, tracing (when the ``OTEL_*`` environment asks for it) and JSON
    logs (``KASAL_LOG_FORMAT=json``)."""
    if settings.log_format.lower() == "json":
        telemetry.configure_json_logs()
    app.add_middleware(MetricsMiddleware)
    app.add_api_route(
        "/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False, tags=["health"]
    )
    provider = telemetry.configure_tracing(
        "kasal-api", capture_content=settings.otel_capture_content
    )
    if provider is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=provider, excluded_urls=UNTRACED, exclude_spans=["receive", "send"]
        )
