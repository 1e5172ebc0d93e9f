"""Crews on a timetable, on Temporal Schedules (Kasal keeps no scheduler of its own).

A schedule ``kasal-sched-<id>`` starts a ``ScheduledCrewRun`` workflow at each action; that
writes the run's execution row (owned, linked to the schedule) and runs the crew as an
ordinary ``CrewWorkflow`` child. Shared by the REST API and ``kasal schedule``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from kasal.constants import (
    RETENTION_SCHEDULE_ID,
    RETENTION_WORKFLOW,
    SCHEDULE_ID_PREFIX,
    SCHEDULED_RUN_WORKFLOW,
)
from kasal.exceptions import InvalidRequestError, NotFoundError

Overlap = Literal[
    "skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"
]
OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
OVERLAP_NAMES = {v: k for k, v in OVERLAP.items()}


class Timetable(BaseModel):
    """When a schedule runs: cron expressions and/or intervals, in a time zone, between
    optional start and end, with an overlap policy, a catch-up window and jitter."""

    model_config = ConfigDict(extra="forbid")

    cron: list[str] = Field(default_factory=list, max_length=20)
    #: Every so many seconds (at least 1).
    interval_seconds: list[float] = Field(default_factory=list, max_length=20)
    time_zone: str | None = Field(default=None, max_length=100)
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter_seconds: float = Field(default=0, ge=0)
    overlap: Overlap = "skip"
    catchup_window_seconds: float = Field(default=60, ge=10)
    paused: bool = False
    note: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _some_time(self) -> Timetable:
        if not self.cron and not self.interval_seconds:
            raise ValueError("give cron expressions, interval_seconds, or both")
        if any(s < 1 for s in self.interval_seconds):
            raise ValueError("intervals are at least 1 second")
        return self

    def spec(self) -> ScheduleSpec:
        """The Temporal schedule spec."""
        return ScheduleSpec(
            cron_expressions=list(self.cron),
            intervals=[
                ScheduleIntervalSpec(every=timedelta(seconds=s)) for s in self.interval_seconds
            ],
            time_zone_name=self.time_zone,
            start_at=self.start_at,
            end_at=self.end_at,
            jitter=timedelta(seconds=self.jitter_seconds) if self.jitter_seconds else None,
        )

    def policy(self) -> SchedulePolicy:
        """Overlap and catch-up."""
        return SchedulePolicy(
            overlap=OVERLAP[self.overlap],
            catchup_window=timedelta(seconds=self.catchup_window_seconds),
        )


class ScheduleView(BaseModel):
    """A schedule as Temporal knows it: timetable, state, next and recent actions."""

    temporal_id: str
    timetable: Timetable
    paused: bool
    note: str | None
    next_runs: list[datetime]
    recent_runs: list[dict[str, Any]]
    running: list[str]
    total_runs: int


def temporal_id(schedule_id: str) -> str:
    """The Temporal schedule id of a Kasal schedule."""
    return f"{SCHEDULE_ID_PREFIX}{schedule_id}"


async def create_schedule(
    client: Client,
    schedule_id: str,
    timetable: Timetable,
    run_input: Any,
    *,
    task_queue: str,
    memo: dict[str, Any] | None = None,
) -> None:
    """Create the Temporal schedule that starts ``ScheduledCrewRun(run_input)``."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SCHEDULED_RUN_WORKFLOW,
            run_input,
            id=f"kasal-run-{schedule_id}",
            task_queue=task_queue,
            memo=memo,
        ),
        spec=timetable.spec(),
        policy=timetable.policy(),
        state=ScheduleState(paused=timetable.paused, note=timetable.note),
    )
    try:
        await client.create_schedule(temporal_id(schedule_id), schedule, memo=memo)
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidRequestError(f"Temporal refused the timetable: {exc.message}") from None
        raise


def _handle(client: Client, schedule_id: str) -> Any:
    return client.get_schedule_handle(temporal_id(schedule_id))


async def _call(coro: Any, schedule_id: str) -> Any:
    try:
        return await coro
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFoundError(f"schedule {schedule_id} not found in Temporal") from None
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidRequestError(f"Temporal refused: {exc.message}") from None
        raise


def _timetable(description: ScheduleDescription) -> Timetable:
    schedule = description.schedule
    spec, policy = schedule.spec, schedule.policy
    return Timetable.model_construct(
        cron=list(spec.cron_expressions),
        interval_seconds=[i.every.total_seconds() for i in spec.intervals],
        time_zone=spec.time_zone_name,
        start_at=spec.start_at,
        end_at=spec.end_at,
        jitter_seconds=spec.jitter.total_seconds() if spec.jitter else 0,
        overlap=OVERLAP_NAMES.get(policy.overlap, "skip"),
        catchup_window_seconds=(
            policy.catchup_window.total_seconds() if policy.catchup_window else 60
        ),
        paused=schedule.state.paused,
        note=schedule.state.note,
    )


async def describe_schedule(client: Client, schedule_id: str) -> ScheduleView:
    """Timetable, paused or not, next run times, recent actions, runs still going."""
    description: ScheduleDescription = await _call(
        _handle(client, schedule_id).describe(), schedule_id
    )
    info = description.info
    return ScheduleView(
        temporal_id=description.id,
        timetable=_timetable(description),
        paused=description.schedule.state.paused,
        note=description.schedule.state.note,
        next_runs=list(info.next_action_times[:10]),
        recent_runs=[
            {
                "scheduled_at": a.scheduled_at,
                "started_at": a.started_at,
                "workflow_id": getattr(a.action, "workflow_id", None),
            }
            for a in info.recent_actions
        ],
        running=[getattr(a, "workflow_id", "") for a in info.running_actions],
        total_runs=info.num_actions,
    )


async def update_schedule(client: Client, schedule_id: str, timetable: Timetable) -> None:
    """Replace the timetable (the action, what runs, stays)."""

    def change(current: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = current.description.schedule
        schedule.spec = timetable.spec()
        schedule.policy = timetable.policy()
        schedule.state = ScheduleState(paused=timetable.paused, note=timetable.note)
        return ScheduleUpdate(schedule=schedule)

    await _call(_handle(client, schedule_id).update(change), schedule_id)


async def pause_schedule(client: Client, schedule_id: str, note: str | None = None) -> None:
    """No new runs until unpaused."""
    await _call(_handle(client, schedule_id).pause(note=note or "paused"), schedule_id)


async def unpause_schedule(client: Client, schedule_id: str, note: str | None = None) -> None:
    """Runs resume at the next time due."""
    await _call(_handle(client, schedule_id).unpause(note=note or "unpaused"), schedule_id)


async def trigger_schedule(client: Client, schedule_id: str) -> None:
    """One run now (the overlap policy ``allow_all``: it runs even beside another)."""
    await _call(
        _handle(client, schedule_id).trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL), schedule_id
    )


async def backfill_schedule(
    client: Client, schedule_id: str, start_at: datetime, end_at: datetime
) -> None:
    """The runs the timetable would have made between ``start_at`` and ``end_at``, now."""
    if end_at <= start_at:
        raise InvalidRequestError("a backfill ends after it starts", field="end_at")
    await _call(
        _handle(client, schedule_id).backfill(
            ScheduleBackfill(
                start_at=start_at, end_at=end_at, overlap=ScheduleOverlapPolicy.ALLOW_ALL
            )
        ),
        schedule_id,
    )


async def delete_schedule(client: Client, schedule_id: str) -> None:
    """No more runs; runs already started go on. Already gone is fine."""
    try:
        await _handle(client, schedule_id).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


async def ensure_retention_schedule(
    client: Client, retention_days: float, *, task_queue: str, every: timedelta = timedelta(hours=1)
) -> bool:
    """Kasal's own schedule that purges finished executions older than ``retention_days``.

    With 0 nothing is touched: a worker started without the setting must not undo another's
    (to stop purging, delete the schedule: ``temporal schedule delete --schedule-id
    kasal-retention``). Returns True if this call created or updated it.
    """
    if retention_days <= 0:
        return False
    handle = client.get_schedule_handle(RETENTION_SCHEDULE_ID)
    action = ScheduleActionStartWorkflow(
        RETENTION_WORKFLOW,
        {"retention_days": retention_days},  # the workflow's PurgeInput
        id="kasal-retention-run",
        task_queue=task_queue,
    )
    schedule = Schedule(
        action=action,
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(RETENTION_SCHEDULE_ID, schedule)
    except Exception:
        # It exists: bring its period and action up to date (another worker's settings).
        def change(current: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(change)
    return True
