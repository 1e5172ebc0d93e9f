"""Schedules: crews on a timetable, on Temporal Schedules.

The row (owner, group, what runs) is written first; the Temporal schedule ``kasal-sched-<id>``
holds the timetable and is the one truth about when. Each run is an ordinary execution
linked to its schedule (``GET /executions?schedule_id=``) and in the schedule's group.

Roles (issue 10): viewers read, operators trigger a run now, editors create, change,
pause, backfill and delete.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import select

from api.audit import note
from api.deps import (
    CurrentPrincipal,
    IdPath,
    Limit,
    Offset,
    SessionDep,
    StateDep,
    TemporalClientDep,
)
from api.schemas import ExecutionSummary, Page
from api.schemas_ops import (
    BackfillIn,
    ScheduleAction,
    ScheduleCreate,
    ScheduleOut,
    ScheduleUpdateIn,
)
from api.services.access import authorized, crew_for, group_for_new
from api.services.catalog import check_runnable
from api.services.executions import StartRequest, resolve_spec
from kasal import schedules as temporal_schedules
from kasal.access import Principal, Role
from kasal.db.models import Execution, Schedule
from kasal.db.teams import SharedRows

router = APIRouter(prefix="/schedules", tags=["schedules"])


async def _get(session, principal: Principal, schedule_id: str, need: Role) -> Schedule:  # type: ignore[no-untyped-def]
    """The schedule, if the caller may act on it with ``need`` (404 outside its group)."""
    row = await session.get(Schedule, schedule_id)
    return authorized(principal, row, need, "schedule", schedule_id)


def _out(row: Schedule, view: temporal_schedules.ScheduleView | None = None) -> ScheduleOut:
    out = ScheduleOut(
        id=row.id,
        name=row.name,
        crew_id=row.crew_id,
        inputs=row.inputs,
        created_at=row.created_at,
        temporal_id=temporal_schedules.temporal_id(row.id),
    )
    if view is not None:
        out.timetable = view.timetable
        out.paused = view.paused
        out.next_runs = view.next_runs
        out.recent_runs = view.recent_runs
        out.total_runs = view.total_runs
    return out


@router.post("", response_model=ScheduleOut, status_code=status.HTTP_201_CREATED)
async def create(
    body: ScheduleCreate,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
) -> ScheduleOut:
    """A crew on a timetable (editors and up), in the crew's group (an inline spec: the
    caller's current group); the spec and inputs are checked now, not at the first run."""
    note(http, "schedule.create", "schedule", after={"crew_id": body.crew_id})
    owner_id = principal.user_id
    if body.crew_id is not None:
        group_id = (await crew_for(session, principal, body.crew_id, Role.EDITOR)).group_id
    else:
        group_id = group_for_new(principal, Role.EDITOR)
    request = StartRequest(
        owner_id=owner_id,
        crew_id=body.crew_id,
        spec=body.spec,
        inputs=body.inputs,
        group_id=group_id,
    )
    spec = await resolve_spec(session, request)
    await check_runnable(
        session,
        client,
        spec,
        task_queue=state.settings.task_queue,
        base_urls=tuple(state.settings.llm_base_urls),
    )
    row = Schedule(
        owner_id=owner_id,
        group_id=group_id,
        name=body.name or spec.name,
        crew_id=body.crew_id,
        spec=None if body.crew_id else spec.model_dump(mode="json"),
        inputs=body.inputs,
    )
    session.add(row)
    await session.commit()
    run_input = {
        "schedule_id": row.id,
        "owner": owner_id,
        "search_attributes": state.temporal.search_attributes,
    }
    try:
        await temporal_schedules.create_schedule(
            client,
            row.id,
            body.timetable,
            run_input,
            task_queue=state.settings.task_queue,
            memo={"owner": owner_id, "name": row.name},
        )
    except Exception:
        await session.delete(row)
        await session.commit()
        raise
    note(
        http,
        "schedule.create",
        "schedule",
        row.id,
        group_id=group_id,
        after={"schedule_id": row.id, "crew_id": body.crew_id},
    )
    return _out(row, await temporal_schedules.describe_schedule(client, row.id))


@router.get("", response_model=Page[ScheduleOut])
async def list_schedules(
    principal: CurrentPrincipal, session: SessionDep, offset: Offset = 0, limit: Limit = 20
) -> Page[ScheduleOut]:
    """The schedules of the caller's groups, newest first (``GET /schedules/{id}`` adds
    Temporal's view)."""
    rows, total = await SharedRows(session).page(
        Schedule,
        principal.visible_groups(),
        None if principal.key_id else principal.user_id,
        offset=offset,
        limit=limit,
    )
    return Page[ScheduleOut](items=[_out(r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/{schedule_id}", response_model=ScheduleOut)
async def get(
    schedule_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleOut:
    """Timetable, paused or not, next runs, recent runs and the executions they started."""
    row = await _get(session, principal, schedule_id, Role.VIEWER)
    out = _out(row, await temporal_schedules.describe_schedule(client, row.id))
    # The runs are in the schedule's group (a schedule from before groups: its owner's).
    whose = (
        Execution.group_id == row.group_id
        if row.group_id is not None
        else Execution.owner_id == row.owner_id
    )
    recent = (
        await session.scalars(
            select(Execution)
            .where(Execution.schedule_id == row.id, whose)
            .order_by(Execution.created_at.desc())
            .limit(10)
        )
    ).all()
    out.recent_executions = [ExecutionSummary.model_validate(e) for e in recent]
    return out


@router.put("/{schedule_id}", response_model=ScheduleOut)
async def update(
    schedule_id: IdPath,
    body: ScheduleUpdateIn,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleOut:
    """Change the timetable, the runs' inputs or the name (editors and up); the next run
    uses them."""
    note(http, "schedule.update", "schedule", schedule_id)
    row = await _get(session, principal, schedule_id, Role.EDITOR)
    note(http, "schedule.update", "schedule", row.id, group_id=row.group_id)
    if body.inputs is not None:
        spec_request = StartRequest(
            owner_id=row.owner_id,
            crew_id=row.crew_id,
            spec=row.spec,
            inputs=body.inputs,
            group_id=row.group_id,
        )
        await resolve_spec(session, spec_request)  # placeholders still filled?
        row.inputs = body.inputs
    if body.name is not None:
        row.name = body.name
    await session.commit()
    if body.timetable is not None:
        await temporal_schedules.update_schedule(client, row.id, body.timetable)
    return _out(row, await temporal_schedules.describe_schedule(client, row.id))


async def _act(
    session, client, principal: Principal, http: Request, schedule_id: str, action: str
) -> ScheduleAction:  # type: ignore[no-untyped-def]
    # Triggering a run is running (operators); pausing and unpausing manage it (editors).
    need = Role.OPERATOR if action == "trigger" else Role.EDITOR
    note(http, f"schedule.{action}", "schedule", schedule_id)
    row = await _get(session, principal, schedule_id, need)
    note(http, f"schedule.{action}", "schedule", row.id, group_id=row.group_id)
    if action == "pause":
        await temporal_schedules.pause_schedule(client, row.id, f"paused by {principal.email}")
    elif action == "unpause":
        await temporal_schedules.unpause_schedule(client, row.id, f"unpaused by {principal.email}")
    else:
        await temporal_schedules.trigger_schedule(client, row.id)
    view = await temporal_schedules.describe_schedule(client, row.id)
    return ScheduleAction(id=row.id, action=action, paused=view.paused)


@router.post("/{schedule_id}/pause", response_model=ScheduleAction)
async def pause(
    schedule_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleAction:
    """No runs until unpaused (editors and up)."""
    return await _act(session, client, principal, http, schedule_id, "pause")


@router.post("/{schedule_id}/unpause", response_model=ScheduleAction)
async def unpause(
    schedule_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleAction:
    """Runs resume when next due (editors and up)."""
    return await _act(session, client, principal, http, schedule_id, "unpause")


@router.post(
    "/{schedule_id}/trigger", response_model=ScheduleAction, status_code=status.HTTP_202_ACCEPTED
)
async def trigger(
    schedule_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleAction:
    """One run now, paused or not (operators and up)."""
    return await _act(session, client, principal, http, schedule_id, "trigger")


@router.post(
    "/{schedule_id}/backfill", response_model=ScheduleAction, status_code=status.HTTP_202_ACCEPTED
)
async def backfill(
    schedule_id: IdPath,
    body: BackfillIn,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleAction:
    """The runs the timetable would have made in a past range, started now (editors and
    up)."""
    note(http, "schedule.backfill", "schedule", schedule_id)
    row = await _get(session, principal, schedule_id, Role.EDITOR)
    note(
        http,
        "schedule.backfill",
        "schedule",
        row.id,
        group_id=row.group_id,
        after={"start_at": body.start_at.isoformat(), "end_at": body.end_at.isoformat()},
    )
    await temporal_schedules.backfill_schedule(client, row.id, body.start_at, body.end_at)
    return ScheduleAction(id=row.id, action="backfill")


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(
    schedule_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> Response:
    """No more runs (editors and up; runs already started go on; their executions stay)."""
    note(http, "schedule.delete", "schedule", schedule_id)
    row = await _get(session, principal, schedule_id, Role.EDITOR)
    note(
        http,
        "schedule.delete",
        "schedule",
        row.id,
        group_id=row.group_id,
        before={"schedule_id": row.id, "crew_id": row.crew_id},
    )
    await temporal_schedules.delete_schedule(client, row.id)
    await session.delete(row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
