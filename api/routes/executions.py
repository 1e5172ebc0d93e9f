"""Executions: start, list, status, result, cancel, human feedback.

The row is written before the workflow starts; while the execution runs its state comes
from the workflow (a query), once finished from the database (written by the worker's
record activity). Callers cannot tell which.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, status
from sqlalchemy.exc import IntegrityError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import (
    CurrentUser,
    IdPath,
    Limit,
    Offset,
    SessionDep,
    StateDep,
    TemporalClientDep,
)
from api.schemas import (
    CancelOut,
    ExecutionCreate,
    ExecutionOut,
    ExecutionResultOut,
    ExecutionStarted,
    ExecutionSummary,
    FeedbackIn,
    FeedbackOut,
    Page,
)
from kasal.blobs import BlobStore, resolve_result
from kasal.client import ExecutionHandle, new_execution_id, start_execution
from kasal.constants import workflow_id_for
from kasal.db.models import Execution
from kasal.db.repositories import FINISHED, CrewRepository, ExecutionRepository
from kasal.exceptions import ConflictError, TemporalUnavailableError
from kasal.execution import (
    CrewWorkflowResult,
    ExecutionState,
    ExecutionStatus,
    TaskStatus,
    TokenUsage,
)
from kasal.spec import CrewSpec

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


def request_hash(crew_id: str | None, spec: dict[str, Any], inputs: dict[str, Any]) -> str:
    """A digest of what a start asks for, to spot an idempotency key reused differently."""
    text = json.dumps({"crew_id": crew_id, "spec": spec, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def started(execution: Execution) -> ExecutionStarted:
    """The 202 body of a start."""
    return ExecutionStarted(
        execution_id=execution.id,
        workflow_id=execution.workflow_id,
        status=execution.status,
        crew_id=execution.crew_id,
        created_at=execution.created_at,
    )


def temporal_error(exc: RPCError) -> TemporalUnavailableError:
    """A Temporal RPC failure as the domain error (no internals in the message)."""
    log.warning("Temporal call failed: %s", exc)
    return TemporalUnavailableError(f"Temporal did not answer: {exc.status.name.lower()}")


@router.post("", response_model=ExecutionStarted, status_code=status.HTTP_202_ACCEPTED)
async def start(
    body: ExecutionCreate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency_key: IdempotencyKey = None,
):
    """Start a crew. With ``Idempotency-Key`` a retried request returns the same execution."""
    await state.execution_limiter.hit(user.id)
    if body.crew_id is not None:
        crew = await CrewRepository(session).get(body.crew_id, user.id)
        spec = CrewSpec.from_data(crew.spec)
    else:
        spec = CrewSpec.from_data(body.spec)
    spec.interpolated(body.inputs)  # a missing input is a 422 before anything is written
    spec_data = spec.model_dump(mode="json")
    digest = request_hash(body.crew_id, spec_data, body.inputs)
    executions = ExecutionRepository(session)
    if idempotency_key is not None:
        existing = await executions.get_by_idempotency_key(user.id, idempotency_key)
        if existing is not None:
            replayed = _replayed(existing, digest)
            await _ensure_started(state, existing)
            return replayed
    client = await state.temporal.get()  # 503 before anything is written if Temporal is down
    execution_id = new_execution_id()
    execution = Execution(
        id=execution_id,
        workflow_id=workflow_id_for(execution_id),
        owner_id=user.id,
        crew_id=body.crew_id,
        crew_name=spec.name,
        status=ExecutionState.PENDING.value,
        spec=spec_data,
        inputs=body.inputs,
        idempotency_key=idempotency_key,
        request_hash=digest,
    )
    # The row is committed before the workflow starts (the one commit outside get_session):
    # the workflow's record activity and any status read must find it.
    try:
        await executions.create(execution)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        existing = await executions.get_by_idempotency_key(user.id, idempotency_key or "")
        if existing is None:
            raise
        return _replayed(existing, digest)
    try:
        await start_execution(
            client,
            spec,
            body.inputs,
            task_queue=state.settings.task_queue,
            execution_id=execution_id,
            crew_id=body.crew_id,
            owner=user.id,
            # False only where the server refused to register them (then starting with
            # them would fail): the Web UI loses its filters, nothing else.
            search_attributes=state.temporal.search_attributes,
        )
    except Exception as exc:
        # Nothing half-written: without a workflow the row must go, so a retry starts anew.
        # A timeout may hide a start that happened, so ask Temporal before deleting.
        if not await _workflow_exists(client, execution_id):
            await executions.delete(execution)
            await session.commit()
            if isinstance(exc, RPCError):
                raise temporal_error(exc) from None
            raise
    return started(execution)


async def _workflow_exists(client: Client, execution_id: str) -> bool:
    try:
        await ExecutionHandle(client, execution_id).describe_status()
        return True
    except Exception:
        return False


async def _ensure_started(state: Any, execution: Execution) -> None:
    """A retried start whose first try died between writing the row and starting the
    workflow (a crashed API process) starts it now: the key never sticks to a dead row."""
    if execution.status != ExecutionState.PENDING.value:
        return
    client = await state.temporal.get()
    if await _workflow_exists(client, execution.id):
        return
    await start_execution(
        client,
        CrewSpec.from_data(execution.spec),
        execution.inputs,
        task_queue=state.settings.task_queue,
        execution_id=execution.id,
        crew_id=execution.crew_id,
        owner=execution.owner_id,
        search_attributes=state.temporal.search_attributes,
    )


def _replayed(existing: Execution, digest: str) -> ExecutionStarted:
    if existing.request_hash and existing.request_hash != digest:
        raise ConflictError(
            "this Idempotency-Key was used for a different request",
            details={"execution_id": existing.id},
        )
    return started(existing)


@router.get("", response_model=Page[ExecutionSummary])
async def list_executions(
    user: CurrentUser,
    session: SessionDep,
    status_filter: StatusFilter = None,
    crew_id: CrewFilter = None,
    offset: Offset = 0,
    limit: Limit = 20,
):
    """The caller's executions, newest first, optionally by status and crew."""
    items, total = await ExecutionRepository(session).list(
        user.id,
        status=status_filter.value if status_filter else None,
        crew_id=crew_id,
        offset=offset,
        limit=limit,
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


def stored_tasks(execution: Execution) -> list[TaskStatus]:
    """Per-task progress as stored, or every task pending if nothing is stored yet."""
    if execution.status_detail:
        return ExecutionStatus.model_validate(execution.status_detail).tasks
    tasks = (execution.spec or {}).get("tasks", [])
    return [TaskStatus(name=t["name"], agent=t["agent"]) for t in tasks]


@router.get("/{execution_id}", response_model=ExecutionOut)
async def get_execution(
    execution_id: IdPath, user: CurrentUser, session: SessionDep, state: StateDep
):
    """An execution's state and per-task progress."""
    executions = ExecutionRepository(session)
    execution = await executions.get(execution_id, user.id)
    base = ExecutionSummary.model_validate(execution).model_dump()
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
            return ExecutionOut(
                **base,
                inputs=execution.inputs,
                token_usage=live.token_usage,
                tasks=live.tasks,
                event_count=live.event_count,
            )
    return ExecutionOut(
        **base,
        inputs=execution.inputs,
        token_usage=TokenUsage.model_validate(execution.token_usage or {}),
        tasks=stored_tasks(execution),
        event_count=execution.event_count,
    )


@router.get("/{execution_id}/result", response_model=ExecutionResultOut)
async def get_result(execution_id: IdPath, user: CurrentUser, session: SessionDep, state: StateDep):
    """The final output, per-task outputs and token usage; 409 until the execution ends."""
    execution = await ExecutionRepository(session).get(execution_id, user.id)
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
        tasks=result.tasks if result else [],
        token_usage=usage,
        error=error,
    )


@router.post(
    "/{execution_id}/cancel", response_model=CancelOut, status_code=status.HTTP_202_ACCEPTED
)
async def cancel(
    execution_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
):
    """Ask a running execution to stop. Idempotent: cancelling a finished one changes nothing."""
    execution = await ExecutionRepository(session).get(execution_id, user.id)
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
    user: CurrentUser,
    session: SessionDep,
    client: TemporalClientDep,
):
    """Human input for a task waiting for review; 409 if no task is waiting."""
    execution = await ExecutionRepository(session).get(execution_id, user.id)
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
