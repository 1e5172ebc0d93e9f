"""Starting an execution: validation, idempotency, the row, the workflow, compensation.

The route only turns HTTP into the values below. Everything here takes plain values (a
session, a Temporal client, the owner's id), never a request or an ORM user: a rollback
expires every object loaded in the session, and an expired ``User`` read afterwards loads
outside the async context (``MissingGreenlet``), which is how a lost idempotency race once
answered 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError

from api.schemas import ExecutionStarted
from api.services.catalog import check_runnable
from kasal.client import ExecutionHandle, new_execution_id, start_execution
from kasal.constants import workflow_id_for
from kasal.db.models import Execution
from kasal.db.repositories import ExecutionRepository
from kasal.db.teams import SharedRows
from kasal.exceptions import ConflictError, NotFoundError, TemporalUnavailableError
from kasal.execution import ExecutionState
from kasal.spec import CrewSpec
from kasal.webhooks import targets_for

log = logging.getLogger(__name__)

#: Inserts tried when the row holding an Idempotency-Key vanishes between our clash and our
#: read (its start failed and was compensated): then the key is free again.
INSERT_ATTEMPTS = 3


@dataclass(frozen=True)
class StartRequest:
    """What a caller asks to start: a stored crew or an inline spec, inputs, maybe a key."""

    owner_id: str
    crew_id: str | None
    spec: dict[str, Any] | None
    inputs: dict[str, Any]
    idempotency_key: str | None = None
    #: A CrewAI project the workers serve, by name.
    project: str | None = None
    #: The group the execution belongs to (issue 10): the crew's, or the caller's current
    #: one for an inline spec or a project. None: only the owner sees it.
    group_id: str | None = None


@dataclass(frozen=True)
class WorkflowOptions:
    """Where and how workflows start: the task queue, and whether search attributes exist."""

    task_queue: str
    search_attributes: bool
    #: Endpoint prefixes specs may point an LLM at (KASAL_LLM_BASE_URLS).
    llm_base_urls: tuple[str, ...] = ()


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
        replay_of=execution.replay_of,
        replay_from_task=execution.replay_from_task,
    )


def temporal_error(exc: RPCError) -> TemporalUnavailableError:
    """A Temporal RPC failure as the domain error (no internals in the message)."""
    log.warning("Temporal call failed: %s", exc)
    return TemporalUnavailableError(f"Temporal did not answer: {exc.status.name.lower()}")


async def resolve_spec(
    session: AsyncSession, request: StartRequest, *, task_queue: str | None = None
) -> CrewSpec:
    """The validated spec to run: the stored crew's (404 unless it is in ``request.group_id``,
    or, a crew with no group, the owner's), the inline one, or a CrewAI project's as its
    workers published it (404 if none serves it).

    Placeholders are checked against the inputs here, so a missing input is an error
    before anything is written. A project started without inputs gets those of its
    ``main.py`` (``spec.inputs``).
    """
    if request.crew_id is not None:
        crew = await SharedRows(session).crew(request.crew_id)
        # The route authorized the caller for the crew's group; the crew must be that one.
        if crew is None or not (
            (crew.group_id is not None and crew.group_id == request.group_id)
            or (crew.group_id is None and crew.owner_id == request.owner_id)
        ):
            raise NotFoundError(f"crew {request.crew_id} not found")
        spec = CrewSpec.from_data(crew.spec)
    elif request.project is not None:
        from kasal.db.projects import ProjectRepository

        row = await ProjectRepository(session).get(request.project, task_queue or "")
        spec = CrewSpec.from_data(row.spec)
        if not request.inputs:
            spec = spec.model_copy(update={"inputs": dict(row.default_inputs)})
    else:
        spec = CrewSpec.from_data(request.spec)
    spec.interpolated(request.inputs or spec.inputs)
    return spec


async def start_execution_for(
    session: AsyncSession,
    client: Client,
    request: StartRequest,
    spec: CrewSpec,
    options: WorkflowOptions,
) -> ExecutionStarted:
    """Start ``spec`` for ``request.owner_id``; idempotent per ``request.idempotency_key``.

    - A key seen before returns that execution (409 if it was used for another request),
      and starts its workflow if the first try died between the row and the workflow.
    - Concurrent starts with one key (one process or several) insert one row: the losers
      of the unique-key race answer with the winner's execution.
    - Tools, providers and endpoints the workers cannot resolve are a 422 before any write.
    - The row is committed before the workflow starts (the record activity and status reads
      must find it); if the workflow cannot be started the row is deleted again, so a
      retry starts afresh.
    """
    spec_data = spec.model_dump(mode="json")
    digest = request_hash(request.crew_id, spec_data, request.inputs)
    executions = ExecutionRepository(session)
    key = request.idempotency_key
    if key is not None:
        existing = await executions.get_by_idempotency_key(request.owner_id, key)
        if existing is not None:
            replayed = _replayed(existing, digest)
            await _ensure_started(session, client, existing, options)
            return replayed
    # After the replay above: a key already answered stays answered even if a tool is gone.
    await check_runnable(
        session, client, spec, task_queue=options.task_queue, base_urls=options.llm_base_urls
    )
    for _attempt in range(INSERT_ATTEMPTS):
        execution = _new_row(request, spec, spec_data, digest)
        try:
            await executions.create(execution)
            await session.commit()
            break
        except IntegrityError:
            await session.rollback()
            if key is None:
                raise
            existing = await executions.get_by_idempotency_key(request.owner_id, key)
            if existing is not None:
                # The winner is starting its workflow right now: do not start it twice.
                return _replayed(existing, digest)
    else:
        raise ConflictError("this Idempotency-Key is being used by another request; retry")
    await _start_or_compensate(session, client, execution, spec, request, options)
    return started(execution)


def _new_row(
    request: StartRequest, spec: CrewSpec, spec_data: dict[str, Any], digest: str
) -> Execution:
    execution_id = new_execution_id()
    return Execution(
        id=execution_id,
        workflow_id=workflow_id_for(execution_id),
        owner_id=request.owner_id,
        group_id=request.group_id,
        crew_id=request.crew_id,
        crew_name=spec.name,
        status=ExecutionState.PENDING.value,
        spec=spec_data,
        inputs=request.inputs,
        idempotency_key=request.idempotency_key,
        request_hash=digest,
    )


async def _start_or_compensate(
    session: AsyncSession,
    client: Client,
    execution: Execution,
    spec: CrewSpec,
    request: StartRequest,
    options: WorkflowOptions,
) -> None:
    try:
        webhooks = await targets_for(
            session, request.owner_id, request.crew_id, group_id=request.group_id
        )
        await start_execution(
            client,
            spec,
            request.inputs,
            task_queue=options.task_queue,
            execution_id=execution.id,
            crew_id=request.crew_id,
            owner=request.owner_id,
            webhooks=webhooks,
            # False only where the server refused to register them (then starting with
            # them would fail): the Web UI loses its filters, nothing else.
            search_attributes=options.search_attributes,
        )
    except Exception as exc:
        # A timeout may hide a start that happened, so ask Temporal before deleting.
        if await workflow_exists(client, execution.id):
            return
        await ExecutionRepository(session).delete(execution)
        await session.commit()
        if isinstance(exc, RPCError):
            raise temporal_error(exc) from None
        raise


async def workflow_exists(client: Client, execution_id: str) -> bool:
    """True if Temporal knows the execution's workflow (any state)."""
    try:
        await ExecutionHandle(client, execution_id).describe_status()
        return True
    except Exception:
        return False


async def _ensure_started(
    session: AsyncSession, client: Client, execution: Execution, options: WorkflowOptions
) -> None:
    """A retried start whose first try died between writing the row and starting the
    workflow (a crashed API process) starts it now: the key never sticks to a dead row.

    Two such retries at once are harmless: a start with an id that is already running
    returns the running workflow.
    """
    if execution.status != ExecutionState.PENDING.value:
        return
    if await workflow_exists(client, execution.id):
        return
    try:
        await start_execution(
            client,
            CrewSpec.from_data(execution.spec),
            execution.inputs,
            task_queue=options.task_queue,
            execution_id=execution.id,
            crew_id=execution.crew_id,
            owner=execution.owner_id,
            search_attributes=options.search_attributes,
            webhooks=await targets_for(
                session, execution.owner_id, execution.crew_id, group_id=execution.group_id
            ),
        )
    except RPCError as exc:
        raise temporal_error(exc) from None


def _replayed(existing: Execution, digest: str) -> ExecutionStarted:
    if existing.request_hash and existing.request_hash != digest:
        raise ConflictError(
            "this Idempotency-Key was used for a different request",
            details={"execution_id": existing.id},
        )
    return started(existing)
