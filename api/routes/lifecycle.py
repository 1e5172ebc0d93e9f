"""Operating executions: stop, force-stop, delete, counts, and the SSE event stream.

Mounted before ``api/routes/executions.py`` so ``/executions/counts`` is not read as an id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from api.audit import note
from api.deps import CurrentPrincipal, IdPath, SessionDep, StateDep, TemporalClientDep
from api.routes.executions import (
    AfterFilter,
    BeforeFilter,
    CrewFilter,
    OwnerFilter,
    ScheduleFilter,
    TextFilter,
    live_status,
)
from api.schemas import ExecutionCounts, StopIn, StopOut
from api.services.access import execution_for
from api.services.lifecycle import delete_execution, force_stop, note_stop, send_stop
from api.sse import event_stream, resume_offset
from kasal.access import Role
from kasal.db.repositories import FINISHED, ExecutionFilter
from kasal.db.teams import SharedRows

router = APIRouter(prefix="/executions", tags=["executions"])


@router.get("/counts", response_model=ExecutionCounts)
async def counts(
    principal: CurrentPrincipal,
    session: SessionDep,
    crew_id: CrewFilter = None,
    schedule_id: ScheduleFilter = None,
    owner_id: OwnerFilter = None,
    created_after: AfterFilter = None,
    created_before: BeforeFilter = None,
    text: TextFilter = None,
) -> ExecutionCounts:
    """How many executions of the caller's groups are in each state (same filters as the
    list)."""
    found = await SharedRows(session).execution_counts(
        principal.visible_groups(),
        None if principal.key_id else principal.user_id,
        crew_id=crew_id,
        started_by=owner_id,
        filters=ExecutionFilter(
            schedule_id=schedule_id,
            created_after=created_after,
            created_before=created_before,
            text=text,
        ),
    )
    return ExecutionCounts(counts=found, total=sum(found.values()))


@router.post("/{execution_id}/stop", response_model=StopOut, status_code=status.HTTP_202_ACCEPTED)
async def stop(
    execution_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
    body: StopIn | None = None,
) -> StopOut:
    """Stop gracefully (operators and up): the running task finishes, no new task starts,
    the execution ends ``stopped``. Idempotent; a finished execution is left as it is."""
    who = principal.email
    note(http, "execution.stop", "execution", execution_id)
    execution = await execution_for(session, principal, execution_id, Role.OPERATOR)
    note(
        http,
        "execution.stop",
        "execution",
        execution.id,
        group_id=execution.group_id,
        before={"status": execution.status},
    )
    if execution.status in FINISHED:
        return _stop_out(execution, "stop", who)
    live = await live_status(state, execution)
    if live is not None and live.state.finished:
        return _stop_out(execution, "stop", who, live.state.value)
    at = await note_stop(session, execution, "stop", who)
    sent = await send_stop(client, execution.id, who, body.reason if body else None)
    return StopOut(
        execution_id=execution.id,
        status="stopping" if sent else execution.status,
        mode="stop",
        requested_by=who,
        requested_at=at,
    )


@router.post("/{execution_id}/force-stop", response_model=StopOut)
async def force_stop_route(
    execution_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
) -> StopOut:
    """Cancel now (operators and up; running tasks stop within a heartbeat); terminate if
    the workflow does not acknowledge within ``KASAL_FORCE_STOP_SECONDS``. Answers once the
    execution has ended."""
    who = principal.email
    note(http, "execution.force_stop", "execution", execution_id)
    execution = await execution_for(session, principal, execution_id, Role.OPERATOR)
    note(
        http,
        "execution.force_stop",
        "execution",
        execution.id,
        group_id=execution.group_id,
        before={"status": execution.status},
    )
    if execution.status in FINISHED:
        return _stop_out(execution, "force_stop", who)
    at = await note_stop(session, execution, "force_stop", who)
    final, terminated = await force_stop(
        client, state.sessions, execution.id, who, state.settings.force_stop_seconds
    )
    await session.refresh(execution)
    return StopOut(
        execution_id=execution.id,
        status=final or execution.status,
        mode="force_stop",
        requested_by=who,
        requested_at=at,
        terminated=terminated,
    )


@router.delete("/{execution_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(
    execution_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> Response:
    """Delete a finished execution with its trace, journal, blobs and Temporal history
    (editors and up); 409 while it runs (stop it first)."""
    note(http, "execution.delete", "execution", execution_id)
    execution = await execution_for(session, principal, execution_id, Role.EDITOR)
    note(
        http,
        "execution.delete",
        "execution",
        execution.id,
        group_id=execution.group_id,
        before={"execution_id": execution.id, "status": execution.status},
    )
    await session.commit()
    try:
        client = await state.temporal.get()
    except Exception:
        client = None  # the database part does not need Temporal
    await delete_execution(client, state.sessions, execution)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{execution_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: id = offset, event = wire type, data = the "
            "event as JSON; `: heartbeat` comments; `event: stream_end` last",
        }
    },
)
async def events(
    execution_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="resume after this offset"),
    ] = None,
    from_offset: Annotated[int | None, Query(ge=0, description="first offset to send")] = None,
) -> StreamingResponse:
    """The execution's events as Server-Sent Events, live until it ends; resumable."""
    execution = await execution_for(session, principal, execution_id)
    stored = execution.status in FINISHED and execution.status_detail is not None
    await session.commit()
    body = event_stream(
        state.relay,  # type: ignore[arg-type]
        state.sessions,
        execution.id,
        resume_offset(last_event_id, from_offset),
        stored=stored,
        heartbeat=state.settings.sse_heartbeat_seconds,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _stop_out(execution, mode: str, who: str, current: str | None = None) -> StopOut:  # type: ignore[no-untyped-def]
    return StopOut(
        execution_id=execution.id,
        status=current or execution.status,
        mode=execution.stop_mode or mode,
        requested_by=execution.stop_requested_by or who,
        requested_at=execution.stop_requested_at or execution.ended_at or execution.created_at,
    )
