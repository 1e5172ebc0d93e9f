"""The Kasal API: ``uvicorn api.main:app`` (or ``create_app(settings)``).

REST under ``/api/v1``, the WebSocket relay at ``/api/v1/ws``, the OpenAPI playground at
``/api/docs``, and ``/healthz`` / ``/readyz`` for orchestrators.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import asyncapi
from api.audit import AuditMiddleware
from api.db import ensure_admin, migrate
from api.deps import AppState, PrincipalCache
from api.errors import install_error_handlers
from api.guards import BodySizeLimitMiddleware, RateLimiter, limiter_storage
from api.observability import install_observability
from api.openapi import install_openapi
from api.relay import Relay
from api.routes import (
    auth,
    crews,
    executions,
    health,
    inbox,
    lifecycle,
    memory,
    projects,
    schedules,
    teams,
    tools,
    traces,
    webhooks,
    ws,
)
from api.schemas import ErrorOut
from api.security import check_settings
from api.temporal import TemporalConnection
from kasal.db.engine import create_engine, session_factory
from kasal.exceptions import TemporalUnavailableError
from kasal.heap import settle as settle_heap
from kasal.reconcile import Reconciler
from kasal.settings import Settings, get_settings

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

#: Error responses documented on every route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the process's resources: engine (migrated), Temporal client, relay."""
    settings: Settings = app.state.settings
    engine = create_engine(settings.resolved_database_url())
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        await ensure_admin(sessions, settings)
        temporal = TemporalConnection(settings)
        try:
            await temporal.get()
        except TemporalUnavailableError as exc:
            log.warning("starting without Temporal (readiness fails until it answers): %s", exc)
        relay = Relay(temporal, sessions)
        reconciler = Reconciler(temporal, sessions, interval=settings.reconcile_interval)
        reconciler.start()
        # One storage for every limit: Redis (shared by the replicas) or this process.
        storage = limiter_storage(settings.redis_url, settings.redis_prefix)
        app.state.kasal = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            temporal=temporal,
            login_limiter=RateLimiter(settings.login_rate_limit, "login", storage),
            execution_limiter=RateLimiter(
                settings.execution_rate_limit, "execution start", storage
            ),
            relay=relay,
            login_failures=RateLimiter(settings.login_failure_limit, "failed login", storage),
            group_limiter=RateLimiter(
                settings.group_execution_rate_limit, "group execution start", storage
            ),
            key_limiter=RateLimiter(settings.api_key_rate_limit, "API key", storage),
            principals=PrincipalCache(settings.auth_cache_seconds)
            if settings.auth_cache_seconds > 0
            else None,
        )
        settle_heap(settings.gc_young_threshold)
        try:
            yield
        finally:
            await reconciler.stop()
            await relay.close()
    finally:
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI application for ``settings`` (default: from the environment).

    Refuses insecure settings outside ``KASAL_ENV=dev`` (see :func:`check_settings`).
    """
    settings = settings or get_settings()
    check_settings(settings)
    app = FastAPI(
        title="Kasal",
        summary="Durable CrewAI crews on Temporal",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-API-Key",
                "X-Kasal-Group",
            ],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    # A request's route is found by trying the routes in order, so the ones clients poll
    # (an execution's status, its trace) come first. lifecycle before executions: its
    # /executions/counts must not be read as an execution id.
    routers = [
        module.router
        for module in (
            lifecycle,
            executions,
            traces,
            auth,
            crews,
            projects,
            tools,
            memory,
            schedules,
            webhooks,
            inbox,
            teams,
        )
    ]
    for router in routers:
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(ws.router, prefix=API_PREFIX)
    app.include_router(health.router)
    app.include_router(asyncapi.router)
    included = [(API_PREFIX, router) for router in (*routers, ws.router)]
    install_openapi(app, [*included, ("", health.router), ("", asyncapi.router)])
    # Last: the metrics middleware and the tracing middleware wrap everything above.
    install_observability(app, settings)
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access (uvicorn's ``api.main:app``), so importing this module
    # reads no environment and ``create_app(settings)`` stays the way to build one in tests.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
