"""Liveness and readiness (outside ``/api/v1``, for orchestrators)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import StateDep
from api.errors import error_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(state: StateDep) -> JSONResponse | dict[str, object]:
    """Ready when the database and Temporal both answer; 503 naming what does not."""
    checks: dict[str, str] = {}
    try:
        async with state.engine.connect() as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), 3.0)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        await state.temporal.check()
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"unavailable: {getattr(exc, 'message', type(exc).__name__)}"
    if all(value == "ok" for value in checks.values()):
        return {"status": "ready", "checks": checks}
    failing = ", ".join(name for name, value in checks.items() if value != "ok")
    return error_response(503, "not_ready", f"not ready: {failing}", checks)
