"""Keep the database true to Temporal for executions that ended outside Kasal.

A crew records its own end (the ``record_execution`` activity) before its workflow closes.
A workflow that is terminated (``temporal workflow terminate``, the Web UI, Kasal's own
force-stop), that times out, or whose worker code never got to record, closes without that
record; a reset starts a new run of a closed one. Here Temporal's ``ExecutionStatus`` is
read and the row brought in line: the state, when it ended, why, and (if a worker can still
answer the workflow's queries) the per-task status and trace as they were.

``KasalStatus`` (the search attribute) is written by the workflow while it runs; Temporal
refuses any change to a closed workflow's search attributes, so for a closed workflow
``ExecutionStatus`` is the truth and ``KasalStatus`` its last word while it ran. The REST API
and the database always give the reconciled state (see README, "Status in Temporal").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from kasal.constants import CREW_WORKFLOW, STATUS_QUERY, TRACE_QUERY, WORKFLOW_ID_PREFIX
from kasal.db.models import Execution
from kasal.db.repositories import FINISHED, ExecutionRepository
from kasal.execution import (
    CrewWorkflowResult,
    Event,
    ExecutionState,
    ExecutionStatus,
    TaskState,
    TaskStatus,
    TraceQueryInput,
)

log = logging.getLogger(__name__)

#: Kasal's state for each closed Temporal status.
CLOSED_STATES: dict[WorkflowExecutionStatus, ExecutionState] = {
    WorkflowExecutionStatus.COMPLETED: ExecutionState.COMPLETED,
    WorkflowExecutionStatus.FAILED: ExecutionState.FAILED,
    WorkflowExecutionStatus.CANCELED: ExecutionState.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: ExecutionState.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: ExecutionState.TIMED_OUT,
}
#: States only reconciliation writes: a reset may bring such an execution back to life.
OUTSIDE_STATES = (ExecutionState.TERMINATED.value, ExecutionState.TIMED_OUT.value)
#: How long a query of a closed workflow may take (it needs a worker to replay it).
QUERY_TIMEOUT = 3.0


def _execution_id(workflow_id: str) -> str | None:
    if not workflow_id.startswith(WORKFLOW_ID_PREFIX):
        return None
    return workflow_id.removeprefix(WORKFLOW_ID_PREFIX)


async def reconcile_execution(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    execution_id: str,
    *,
    description: WorkflowExecutionDescription | None = None,
    reason: str | None = None,
) -> str | None:
    """Bring one execution's row in line with Temporal; returns the row's state after.

    - closed without a record (terminated, timed out, or a record that never landed): the
      row gets Temporal's verdict, the close time, and the last status and trace the
      workflow can still answer;
    - running again although the row says terminated or timed out (a reset): the row is
      running again, and the new run's own record will finish it.
    """
    handle = client.get_workflow_handle(
        f"{WORKFLOW_ID_PREFIX}{execution_id}", result_type=CrewWorkflowResult
    )
    if description is None:
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
    async with sessions() as session:
        row = await session.get(Execution, execution_id)
        if row is None:
            return None
        current = row.status
    if description.status == WorkflowExecutionStatus.RUNNING:
        if current not in OUTSIDE_STATES:
            return current
        async with sessions() as session, session.begin():
            await session.execute(
                update(Execution)
                .where(Execution.id == execution_id, Execution.status.in_(OUTSIDE_STATES))
                .values(status=ExecutionState.RUNNING.value, ended_at=None, error=None)
            )
        log.info("execution %s runs again (a reset): reconciled to running", execution_id)
        return ExecutionState.RUNNING.value
    state = CLOSED_STATES.get(description.status) if description.status else None
    if state is None or current in FINISHED:
        return current
    result = None
    if state == ExecutionState.COMPLETED:
        # Closed normally but unrecorded (the record activity gave up): its result is in
        # Temporal, and says whether a graceful stop ended it.
        try:
            result = await asyncio.wait_for(handle.result(), QUERY_TIMEOUT)
            if result.stopped:
                state = ExecutionState.STOPPED
        except Exception as exc:
            log.info("no result of %s: %s", execution_id, type(exc).__name__)
    status, events = await _last_words(handle)
    ended = description.close_time or datetime.now(UTC)
    why = reason or _default_reason(state)
    if status is None:
        tasks = [TaskStatus(name=t["name"], agent=t["agent"]) for t in row.spec.get("tasks", [])]
        status = ExecutionStatus(
            execution_id=execution_id,
            crew_name=row.crew_name,
            crew_id=row.crew_id,
            state=state,
            started_at=row.started_at or description.start_time,
            tasks=tasks,
        )
    if state != ExecutionState.COMPLETED:
        # Tasks that were running when it ended did not finish.
        for task in status.tasks:
            if task.state not in (TaskState.COMPLETED, TaskState.FAILED):
                if task.state != TaskState.PENDING:
                    task.ended_at = task.ended_at or ended
                task.state = TaskState.CANCELLED
    status.state = state
    status.ended_at = ended
    status.error = status.error or why
    async with sessions() as session, session.begin():
        # Another replica may have reconciled it a moment ago: never overwrite a final state.
        fresh = await session.get(Execution, execution_id, with_for_update=True)
        if fresh is None or fresh.status in FINISHED:
            return fresh.status if fresh else None
        await ExecutionRepository(session).record_finished(
            workflow_id=description.id,
            status=status,
            result=result,
            events=events if events is not None else [],
            owner=fresh.owner_id,
        )
        if events is None:
            fresh.event_count = status.event_count
    log.info("execution %s ended outside Kasal: reconciled to %s", execution_id, state.value)
    return state.value


def _default_reason(state: ExecutionState) -> str:
    if state == ExecutionState.TERMINATED:
        return "terminated outside Kasal (Temporal CLI or Web UI)"
    if state == ExecutionState.TIMED_OUT:
        return "the workflow timed out"
    return f"ended {state.value} without recording its end"


async def _last_words(handle: object) -> tuple[ExecutionStatus | None, list[Event] | None]:
    """The closed workflow's last status and every event, if a worker can replay it now."""
    try:
        status = await asyncio.wait_for(
            handle.query(STATUS_QUERY, result_type=ExecutionStatus),  # type: ignore[attr-defined]
            QUERY_TIMEOUT,
        )
        events: list[Event] = []
        while True:
            page = await asyncio.wait_for(
                handle.query(  # type: ignore[attr-defined]
                    TRACE_QUERY,
                    TraceQueryInput(from_offset=len(events), limit=1000),
                    result_type=list[Event],
                ),
                QUERY_TIMEOUT,
            )
            events.extend(page)
            if len(page) < 1000:
                return status, events
    except Exception as exc:  # no worker, or a history it cannot replay: the row still ends
        log.info("no last status from %s: %s", getattr(handle, "id", "?"), type(exc).__name__)
        return None, None


class Reconciler:
    """Every few seconds: closed crew workflows whose rows still say they run, and rows
    ended outside Kasal whose workflow runs again (a reset). Safe in every API replica."""

    def __init__(
        self,
        client_source: object,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval: float = 2.0,
        lookback: timedelta = timedelta(minutes=10),
    ) -> None:
        #: Something with ``async get() -> Client`` (the API's TemporalConnection).
        self.client_source = client_source
        self.sessions = sessions
        self.interval = interval
        self.lookback = lookback
        self._task: asyncio.Task[None] | None = None
        self._since: datetime | None = None

    def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._loop(), name="kasal-reconciler")

    async def stop(self) -> None:
        """Stop the background loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("reconciliation pass failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> list[str]:
        """One pass; returns the ids of the executions it changed."""
        client: Client = await self.client_source.get()  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        since = (self._since or now - self.lookback) - timedelta(seconds=30)
        query = (
            f"WorkflowType = '{CREW_WORKFLOW}' AND ExecutionStatus != 'Running' "
            f"AND CloseTime > '{since.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"
        )
        closed: dict[str, WorkflowExecutionStatus | None] = {}
        async for info in client.list_workflows(query, limit=2000):
            execution_id = _execution_id(info.id)
            if execution_id is not None and info.status != WorkflowExecutionStatus.CONTINUED_AS_NEW:
                closed[execution_id] = info.status
        changed: list[str] = []
        async with self.sessions() as session:
            stale = await _unfinished(session, list(closed))
            if self._since is None:
                # First pass of this process: executions that ended while no API ran (longer
                # ago than the look-back) are found by asking Temporal about every open row.
                rows = await session.scalars(
                    select(Execution.id).where(Execution.status.not_in(FINISHED)).limit(1000)
                )
                stale = list(dict.fromkeys([*stale, *rows.all()]))
            revived = (
                await session.scalars(
                    select(Execution.id)
                    .where(
                        Execution.status.in_(OUTSIDE_STATES),
                        Execution.ended_at > now - timedelta(days=1),
                    )
                    .limit(200)
                )
            ).all()
        candidates = list(dict.fromkeys([*stale, *revived]))
        async with self.sessions() as session:
            before = dict(
                (
                    await session.execute(
                        select(Execution.id, Execution.status).where(Execution.id.in_(candidates))
                    )
                ).all()
            )
        for execution_id in candidates:
            try:
                after = await reconcile_execution(client, self.sessions, execution_id)
            except Exception as exc:
                log.info("could not reconcile %s: %s", execution_id, exc)
                continue
            if after is not None and after != before.get(execution_id):
                changed.append(execution_id)
        self._since = now
        return changed


async def _unfinished(session: AsyncSession, ids: Sequence[str]) -> list[str]:
    if not ids:
        return []
    rows = await session.scalars(
        select(Execution.id).where(Execution.id.in_(ids), Execution.status.not_in(FINISHED))
    )
    return list(rows.all())
