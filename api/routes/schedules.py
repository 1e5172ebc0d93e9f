"""Schedules: crews on a timetable, on Temporal Schedules.

The row (owner, what runs) is written first; the Temporal schedule ``kasal-sched-<id>``
holds the timetable and is the one truth about when. Each run is an ordinary execution
linked to its schedule (``GET /executions?schedule_id=``).
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from api.deps import CurrentUser, IdPath, Limit, Offset, SessionDep, StateDep, TemporalClientDep
from api.schemas import ExecutionSummary, Page
from api.schemas_ops import (
    BackfillIn,
    ScheduleAction,
    ScheduleCreate,
    ScheduleOut,
    ScheduleUpdateIn,
)
from api.services.catalog import check_runnable
from api.services.executions import StartRequest, resolve_spec
from kasal import schedules as temporal_schedules
from kasal.db.models import Execution, Schedule
from kasal.exceptions import NotFoundError

router = APIRouter(prefix="/schedules", tags=["schedules"])


async def _get(session, schedule_id: str, owner_id: str) -> Schedule:  # type: ignore[no-untyped-def]
    row = await session.get(Schedule, schedule_id)
    if row is None or row.owner_id != owner_id:
        raise NotFoundError(f"schedule {schedule_id} not found")
    return row


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
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
) -> ScheduleOut:
    """A crew on a timetable; the spec and inputs are checked now, not at the first run."""
    owner_id = user.id
    request = StartRequest(
        owner_id=owner_id, crew_id=body.crew_id, spec=body.spec, inputs=body.inputs
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
    return _out(row, await temporal_schedules.describe_schedule(client, row.id))


@router.get("", response_model=Page[ScheduleOut])
async def list_schedules(
    user: CurrentUser, session: SessionDep, offset: Offset = 0, limit: Limit = 20
) -> Page[ScheduleOut]:
    """The caller's schedules, newest first (``GET /schedules/{id}`` adds Temporal's view)."""
    from sqlalchemy import func

    where = Schedule.owner_id == user.id
    total = await session.scalar(select(func.count()).select_from(Schedule).where(where))
    rows = (
        await session.scalars(
            select(Schedule)
            .where(where)
            .order_by(Schedule.created_at.desc())
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return Page[ScheduleOut](
        items=[_out(r) for r in rows], total=int(total or 0), offset=offset, limit=limit
    )


@router.get("/{schedule_id}", response_model=ScheduleOut)
async def get(
    schedule_id: IdPath, user: CurrentUser, session: SessionDep, client: TemporalClientDep
) -> ScheduleOut:
    """Timetable, paused or not, next runs, recent runs and the executions they started."""
    row = await _get(session, schedule_id, user.id)
    out = _out(row, await temporal_schedules.describe_schedule(client, row.id))
    recent = (
        await session.scalars(
            select(Execution)
            .where(Execution.schedule_id == row.id, Execution.owner_id == user.id)
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
    user: CurrentUser,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleOut:
    """Change the timetable, the runs' inputs or the name; the next run uses them."""
    row = await _get(session, schedule_id, user.id)
    if body.inputs is not None:
        spec_request = StartRequest(
            owner_id=user.id, crew_id=row.crew_id, spec=row.spec, inputs=body.inputs
        )
        await resolve_spec(session, spec_request)  # placeholders still filled?
        row.inputs = body.inputs
    if body.name is not None:
        row.name = body.name
    await session.commit()
    if body.timetable is not None:
        await temporal_schedules.update_schedule(client, row.id, body.timetable)
    return _out(row, await temporal_schedules.describe_schedule(client, row.id))


async def _act(session, client, user, schedule_id: str, action: str) -> ScheduleAction:  # type: ignore[no-untyped-def]
    row = await _get(session, schedule_id, user.id)
    if action == "pause":
        await temporal_schedules.pause_schedule(client, row.id, f"paused by {user.email}")
    elif action == "unpause":
        await temporal_schedules.unpause_schedule(client, row.id, f"unpaused by {user.email}")
    else:
        await temporal_schedules.trigger_schedule(client, row.id)
    view = await temporal_schedules.describe_schedule(client, row.id)
    return ScheduleAction(id=row.id, action=action, paused=view.paused)


@router.post("/{schedule_id}/pause", response_model=ScheduleAction)
async def pause(
    schedule_id: IdPath, user: CurrentUser, session: SessionDep, client: TemporalClientDep
) -> ScheduleAction:
    """No runs until unpaused."""
    return await _act(session, client, user, schedule_id, "pause")


@router.post("/{schedule_id}/unpause", response_model=ScheduleAction)
async def unpause(
    schedule_id: IdPath, user: CurrentUser, session: SessionDep, client: TemporalClientDep
) -> ScheduleAction:
    """Runs resume when next due."""
    return await _act(session, client, user, schedule_id, "unpause")


@router.post(
    "/{schedule_id}/trigger", response_model=ScheduleAction, status_code=status.HTTP_202_ACCEPTED
)
async def trigger(
    schedule_id: IdPath, user: CurrentUser, session: SessionDep, client: TemporalClientDep
) -> ScheduleAction:
    """One run now (paused or not)."""
    return await _act(session, client, user, schedule_id, "trigger")


@router.post(
    "/{schedule_id}/backfill", response_model=ScheduleAction, status_code=status.HTTP_202_ACCEPTED
)
async def backfill(
    schedule_id: IdPath,
    body: BackfillIn,
    user: CurrentUser,
    session: SessionDep,
    client: TemporalClientDep,
) -> ScheduleAction:
    """The runs the timetable would have made in a past range, started now."""
    row = await _get(session, schedule_id, user.id)
    await temporal_schedules.backfill_schedule(client, row.id, body.start_at, body.end_at)
    return ScheduleAction(id=row.id, action="backfill")


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(
    schedule_id: IdPath, user: CurrentUser, session: SessionDep, client: TemporalClientDep
) -> Response:
    """No more runs (runs already started go on; their executions stay)."""
    row = await _get(session, schedule_id, user.id)
    await temporal_schedules.delete_schedule(client, row.id)
    await session.delete(row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
