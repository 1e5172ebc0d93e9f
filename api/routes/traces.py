"""Traces: the ordered events of an execution, paginated by offset."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentPrincipal, IdPath, Offset, SessionDep, StateDep
from api.schemas import TraceOut, wire_event
from api.services.access import execution_for
from kasal.client import ExecutionHandle
from kasal.db.repositories import FINISHED, TraceRepository
from kasal.execution import Event

log = logging.getLogger(__name__)
router = APIRouter(prefix="/traces", tags=["traces"])

TraceLimit = Annotated[int, Query(ge=1, le=1000, description="events per page")]


@router.get("/{job_id}", response_model=TraceOut)
async def get_trace(
    job_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    offset: Offset = 0,
    limit: TraceLimit = 100,
):
    """Events of execution ``job_id`` from ``offset`` on, in order."""
    execution = await execution_for(session, principal, job_id)
    finished = execution.status in FINISHED
    events: list[Event] | None = None
    if not finished:
        events = await _live_trace(state, job_id, offset, limit)
    if events is None:
        events = await TraceRepository(session).page(job_id, offset=offset, limit=limit)
    next_offset = (events[-1].offset or 0) + 1 if events else offset
    return TraceOut(
        execution_id=job_id,
        offset=offset,
        limit=limit,
        next_offset=next_offset,
        finished=finished,
        events=[wire_event(job_id, event) for event in events],
    )


async def _live_trace(state: object, job_id: str, offset: int, limit: int) -> list[Event] | None:
    try:
        client = await state.temporal.get()  # type: ignore[attr-defined]
        return await asyncio.wait_for(ExecutionHandle(client, job_id).trace(offset, limit), 5.0)
    except Exception as exc:
        log.info("trace of %s from the database: %s", job_id, type(exc).__name__)
        return None
