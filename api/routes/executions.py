"""Executions: start, list, status, result, cancel, human feedback.

The row is written before the workflow starts; while the execution runs its state comes
from the workflow (a query), once finished from the database (written by the worker's
record activity). Callers cannot tell which.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

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
from api.errors import QuotaExceededError
from api.schemas import (
    CancelOut,
    ExecutionCreate,
    ExecutionOut,
    ExecutionPending,
    ExecutionResultOut,
    ExecutionStarted,
    ExecutionSummary,
    FeedbackIn,
    FeedbackOut,
    Page,
    ReplayIn,
)
from api.services.access import crew_for, execution_for, group_for_new
from api.services.executions import (
    StartRequest,
    WorkflowOptions,
    resolve_spec,
    start_execution_for,
    temporal_error,
)
from api.services.lifecycle import wait_closed
from api.services.replay import replay_execution
from kasal import metrics
from kasal.access import Role
from kasal.blobs import BlobStore, resolve_result
from kasal.client import ExecutionHandle
from kasal.db.models import Execution
from kasal.db.repositories import FINISHED, ExecutionFilter, ExecutionRepository
from kasal.db.teams import SharedRows
from kasal.exceptions import ConflictError, TemporalUnavailableError
from kasal.execution import (
    CrewWorkflowResult,
    ExecutionState,
    ExecutionStatus,
    TaskStatus,
    TokenUsage,
)
from kasal.reconcile import reconcile_execution

log = logging.getLogger(__name__)
router = APIRouter(prefix="/executions", tags=["executions"])

#: How long a status query may take before the database answers instead.
QUERY_TIMEOUT = 5.0

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="a retried request with the same key returns the same execution",
    ),
]
StatusFilter = Annotated[ExecutionState | None, Query(alias="status")]
CrewFilter = Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")]
ScheduleFilter = Annotated[
    str | None, Query(pattern=r"^[0-9a-f]{32}$", description="runs of this schedule")
]
OwnerFilter = Annotated[
    str | None,
    Query(pattern=r"^[0-9a-f]{32}$", description="executions this user started"),
]
AfterFilter = Annotated[datetime | None, Query(description="created at or after")]
BeforeFilter = Annotated[datetime | None, Query(description="created before")]
TextFilter = Annotated[
    str | None, Query(alias="q", max_length=200, description="text in the crew name")
]
#: Longest ``?wait=`` a result request may block.
MAX_WAIT_SECONDS = 300


@router.post("", response_model=ExecutionStarted, status_code=status.HTTP_202_ACCEPTED)
async def start(
    body: ExecutionCreate,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
    idempotency_key: IdempotencyKey = None,
) -> ExecutionStarted:
    """Start a crew (operators and up). The execution belongs to the crew's group (an
    inline spec: the caller's current group). With ``Idempotency-Key`` a retried request
    returns the same execution. 429 past the per-user or per-group start rate, or when the
    group already runs its quota of executions (``KASAL_GROUP_MAX_CONCURRENT_EXECUTIONS``).
    """
    note(http, "execution.start", "execution", after={"crew_id": body.crew_id})
    owner_id = principal.user_id
    if body.crew_id is not None:
        group_id = (await crew_for(session, principal, body.crew_id, Role.OPERATOR)).group_id
    else:
        group_id = group_for_new(principal, Role.OPERATOR)
    await state.execution_limiter.hit(owner_id)
    if group_id is not None and state.group_limiter is not None:
        await state.group_limiter.hit(group_id)
    request = StartRequest(
        owner_id=owner_id,
        crew_id=body.crew_id,
        spec=body.spec,
        inputs=body.inputs,
        idempotency_key=idempotency_key,
        project=body.project,
        group_id=group_id,
    )
    spec = await resolve_spec(session, request, task_queue=state.settings.task_queue)
    if body.project is not None and not body.inputs:
        # The project's own main.py inputs, as `crewai run` (and `kasal run DIR`) use them.
        request = dataclasses.replace(request, inputs=dict(spec.inputs))
    quota = state.settings.group_max_concurrent_executions
    if quota and group_id is not None:
        await _check_quota(session, group_id, quota, owner_id, idempotency_key)
    options = WorkflowOptions(
        task_queue=state.settings.task_queue,
        search_attributes=state.temporal.search_attributes,
        llm_base_urls=tuple(state.settings.llm_base_urls),
    )
    started = await start_execution_for(session, client, request, spec, options)
    metrics.EXECUTIONS_STARTED.inc()
    note(
        http,
        "execution.start",
        "execution",
        started.execution_id,
        group_id=group_id,
        after={"execution_id": started.execution_id, "crew_id": body.crew_id},
    )
    return started


async def _check_quota(
    session: Any, group_id: str, quota: int, owner_id: str, idempotency_key: str | None
) -> None:
    """429 if the group runs ``quota`` executions already. A retried start (its
    Idempotency-Key known) is let through: it starts nothing new."""
    if idempotency_key is not None:
        known = await ExecutionRepository(session).get_by_idempotency_key(owner_id, idempotency_key)
        if known is not None:
            return
    rows = SharedRows(session)
    await rows.lock_group(group_id)  # held until the start commits its row
    running = await rows.running_in_group(group_id)
    if running >= quota:
        raise QuotaExceededError(
            f"this group runs {running} executions, its quota is {quota}: retry when one ends",
            running=running,
            quota=quota,
        )


@router.post(
    "/{execution_id}/replay",
    response_model=ExecutionStarted,
    status_code=status.HTTP_202_ACCEPTED,
)
async def replay(
    execution_id: IdPath,
    body: ReplayIn,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
) -> ExecutionStarted:
    """Re-run an execution from ``from_task`` as a NEW execution (``replay_of`` links it,
    and it belongs to the original's group; operators and up): every earlier task keeps the
    original's output, with no LLM or tool call; ``from_task`` and the tasks after it run
    again with ``inputs`` overriding the original's. The original stays as it was. 409 if a
    task before ``from_task`` did not finish."""
    note(http, "execution.replay", "execution", execution_id)
    original = await execution_for(session, principal, execution_id, Role.OPERATOR)
    owner_id = principal.user_id
    await state.execution_limiter.hit(owner_id)
    if original.group_id is not None and state.group_limiter is not None:
        await state.group_limiter.hit(original.group_id)
    quota = state.settings.group_max_concurrent_executions
    if quota and original.group_id is not None:
        await _check_quota(session, original.group_id, quota, owner_id, None)
    options = WorkflowOptions(
        task_queue=state.settings.task_queue,
        search_attributes=state.temporal.search_attributes,
        llm_base_urls=tuple(state.settings.llm_base_urls),
    )
    started = await replay_execution(
        session,
        client,
        owner_id=owner_id,
        original=original,
        from_task=body.from_task,
        inputs=body.inputs,
        options=options,
    )
    metrics.EXECUTIONS_STARTED.inc()
    note(
        http,
        "execution.replay",
        "execution",
        started.execution_id,
        group_id=original.group_id,
        before={"execution_id": original.id},
        after={"execution_id": started.execution_id, "from_task": body.from_task},
    )
    return started


@router.get("", response_model=Page[ExecutionSummary])
async def list_executions(
    principal: CurrentPrincipal,
    session: SessionDep,
    status_filter: StatusFilter = None,
    crew_id: CrewFilter = None,
    schedule_id: ScheduleFilter = None,
    owner_id: OwnerFilter = None,
    created_after: AfterFilter = None,
    created_before: BeforeFilter = None,
    text: TextFilter = None,
    offset: Offset = 0,
    limit: Limit = 20,
):
    """The executions of the caller's groups, newest first, by status, crew, schedule,
    the user who started them, creation time and text in the crew name."""
    items, total = await SharedRows(session).executions(
        principal.visible_groups(),
        None if principal.key_id else principal.user_id,
        started_by=owner_id,
        status=status_filter.value if status_filter else None,
        crew_id=crew_id,
        offset=offset,
        limit=limit,
        filters=ExecutionFilter(
            schedule_id=schedule_id,
            created_after=created_after,
            created_before=created_before,
            text=text,
        ),
    )
    return Page[ExecutionSummary](
        items=[ExecutionSummary.model_validate(e) for e in items],
        total=total,
        offset=offset,
        limit=limit,
    )


#: Concurrent status reads of one execution share one workflow query, whose answer is
#: reused this long: each query costs a workflow task on a worker, so 50 clients polling
#: one execution would otherwise queue 50 of them (p99 measured 2.3 s -> see bench/api.py).
STATUS_REUSE_SECONDS = 0.25
_status_queries: dict[str, tuple[float, asyncio.Future[ExecutionStatus]]] = {}


async def _query_status(client: Client, execution_id: str) -> ExecutionStatus:
    now = time.monotonic()
    cached = _status_queries.get(execution_id)
    if cached is not None and (not cached[1].done() or now - cached[0] < STATUS_REUSE_SECONDS):
        return await asyncio.shield(cached[1])
    if len(_status_queries) > 10_000:
        _status_queries.clear()
    future = asyncio.ensure_future(ExecutionHandle(client, execution_id).status())
    _status_queries[execution_id] = (now, future)
    try:
        return await asyncio.shield(future)
    except BaseException:
        _status_queries.pop(execution_id, None)
        raise


async def live_status(state: Any, execution: Execution) -> ExecutionStatus | None:
    """The workflow's own view of a running execution, or None if it cannot answer now."""
    try:
        client = await state.temporal.get()
        return await asyncio.wait_for(_query_status(client, execution.id), QUERY_TIMEOUT)
    except (TemporalUnavailableError, RPCError, TimeoutError) as exc:
        log.info("status of %s from the database: %s", execution.id, exc)
        return None
    except Exception as exc:  # e.g. a query failure while a worker restarts
        log.info("status of %s from the database: %s", execution.id, type(exc).__name__)
        return None


def stored_tasks(execution: Execution) -> list[dict[str, Any] | TaskStatus]:
    """Per-task progress as stored (:class:`TaskStatus` data, validated where the answer
    is), or every task pending if nothing is stored yet."""
    if execution.status_detail:
        return list(execution.status_detail["tasks"])
    tasks = (execution.spec or {}).get("tasks", [])
    return [TaskStatus(name=t["name"], agent=t["agent"]) for t in tasks]


#: The columns an :class:`ExecutionSummary` shows, read off the row as they are.
SUMMARY_FIELDS = tuple(ExecutionSummary.model_fields)


@router.get("/{execution_id}", response_model=ExecutionOut)
async def get_execution(
    execution_id: IdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> Response:
    """An execution's state and per-task progress."""
    executions = ExecutionRepository(session)
    # Without the result (possibly large): a status read never shows it.
    execution = await execution_for(session, principal, execution_id, status_only=True)
    # One validation of the whole answer, not one per part.
    base = {name: getattr(execution, name) for name in SUMMARY_FIELDS}
    if execution.status not in FINISHED:
        live = await live_status(state, execution)
        if live is not None:
            if live.state.value != execution.status:  # a write only when something changed
                await executions.note_live_status(execution.id, live.state.value, live.started_at)
            base.update(
                status=live.state.value,
                started_at=live.started_at,
                ended_at=live.ended_at,
                error=live.error,
            )
            return _json(
                ExecutionOut.model_validate(
                    {
                        **base,
                        "inputs": execution.inputs,
                        "token_usage": live.token_usage,
                        "tasks": live.tasks,
                        "event_count": live.event_count,
                    }
                )
            )
    if not execution.status_detail:
        await session.refresh(execution, ["spec"])  # the tasks' names, all pending
    return _json(
        ExecutionOut.model_validate(
            {
                **base,
                "inputs": execution.inputs,
                "token_usage": execution.token_usage or {},
                "tasks": stored_tasks(execution),
                "event_count": execution.event_count,
            }
        )
    )


def _json(model: ExecutionOut) -> Response:
    """The model as FastAPI would send it (by alias), serialized once: returned as a model,
    FastAPI dumps it to a dict, validates that again and serializes the result."""
    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


@router.get(
    "/{execution_id}/result",
    response_model=ExecutionResultOut,
    responses={202: {"model": ExecutionPending, "description": "?wait= ran out before the end"}},
)
async def get_result(
    execution_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="seconds to wait for the end (answered the moment it ends); "
            "202 with the status if it has not ended by then",
        ),
    ] = 0,
) -> Any:
    """The final output, per-task outputs and token usage. Without ``wait``, 409 until the
    execution ends; with it, blocks until the end or answers 202 with the status."""
    execution = await execution_for(session, principal, execution_id)
    if execution.status not in FINISHED and wait > 0:
        # Wait on Temporal (a long poll), holding no database connection meanwhile.
        await session.commit()
        client = await state.temporal.get()
        began = time.monotonic()
        if await wait_closed(client, execution.id, wait):
            # A crew records its end before it closes; one ended outside Kasal is
            # reconciled now rather than at the next pass.
            await reconcile_execution(client, state.sessions, execution.id)
            await session.refresh(execution)
        if execution.status not in FINISHED:
            live = await live_status(state, execution)
            if live is None or not live.state.finished:
                return JSONResponse(
                    status_code=status.HTTP_202_ACCEPTED,
                    content=ExecutionPending(
                        execution_id=execution.id,
                        status=live.state.value if live else execution.status,
                        waited_seconds=round(time.monotonic() - began, 3),
                    ).model_dump(),
                )
    if execution.status in FINISHED:
        result = CrewWorkflowResult.model_validate(execution.result) if execution.result else None
        usage = TokenUsage.model_validate(execution.token_usage or {})
        return _result_out(execution.id, execution.status, result, usage, execution.error)
    # The workflow reports its end a moment before the record activity has written it.
    live = await live_status(state, execution)
    if live is None or not live.state.finished:
        current = live.state.value if live else execution.status
        raise ConflictError(
            f"execution {execution_id} has not finished (status {current})",
            details={"status": current},
        )
    result = None
    if live.state == ExecutionState.COMPLETED:
        client = await state.temporal.get()
        handle = ExecutionHandle(client, execution.id)
        result = await asyncio.wait_for(handle.result(resolve=False), 30)
        # Large outputs are read from this app's database, not the process-wide default.
        result = await resolve_result(result, BlobStore(state.sessions))
    return _result_out(execution.id, live.state.value, result, live.token_usage, live.error)


def _result_out(
    execution_id: str,
    status_value: str,
    result: CrewWorkflowResult | None,
    usage: TokenUsage,
    error: str | None,
) -> ExecutionResultOut:
    return ExecutionResultOut(
        execution_id=execution_id,
        status=status_value,
        output=result.output if result else None,
        json=result.json_dict if result else None,
        tasks=result.tasks if result else [],
        token_usage=usage,
        error=error,
    )


@router.post(
    "/{execution_id}/cancel", response_model=CancelOut, status_code=status.HTTP_202_ACCEPTED
)
async def cancel(
    execution_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
):
    """Ask a running execution to stop (operators and up). Idempotent: cancelling a finished
    one changes nothing."""
    note(http, "execution.cancel", "execution", execution_id)
    execution = await execution_for(session, principal, execution_id, Role.OPERATOR)
    note(
        http,
        "execution.cancel",
        "execution",
        execution.id,
        group_id=execution.group_id,
        before={"status": execution.status},
    )
    if execution.status in FINISHED:
        return CancelOut(execution_id=execution.id, status=execution.status, cancel_requested=False)
    live = await live_status(state, execution)
    if live is not None and live.state.finished:
        return CancelOut(execution_id=execution.id, status=live.state.value, cancel_requested=False)
    handle = ExecutionHandle(client, execution.id)
    try:
        await handle.cancel()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise temporal_error(exc) from None
    return CancelOut(execution_id=execution.id, status="cancelling", cancel_requested=True)


#: Seconds a feedback request waits for the workflow to accept it (a worker must run it).
FEEDBACK_TIMEOUT = 15


@router.post("/{execution_id}/feedback", response_model=FeedbackOut)
async def feedback(
    execution_id: IdPath,
    body: FeedbackIn,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
):
    """Human input for a task waiting for review (operators and up); 409 if no task is
    waiting."""
    note(http, "execution.feedback", "execution", execution_id)
    execution = await execution_for(session, principal, execution_id, Role.OPERATOR)
    note(
        http,
        "execution.feedback",
        "execution",
        execution.id,
        group_id=execution.group_id,
        after={"approve": body.approve, "task": body.task},
    )
    if execution.status in FINISHED:
        raise ConflictError(f"execution {execution_id} has finished ({execution.status})")
    handle = ExecutionHandle(client, execution.id)
    try:
        result = await asyncio.wait_for(
            handle.feedback(approve=body.approve, feedback=body.feedback, task=body.task),
            FEEDBACK_TIMEOUT,
        )
    except TimeoutError:
        raise TemporalUnavailableError(
            "the execution did not answer in time: is a worker running?"
        ) from None
    except WorkflowUpdateFailedError as exc:
        reason = getattr(exc.cause, "message", None) or "the execution refused the feedback"
        raise ConflictError(reason) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConflictError(f"execution {execution_id} is not running") from None
        raise temporal_error(exc) from None
    return FeedbackOut(execution_id=execution.id, **result.model_dump())
