"""Replaying an execution from a task: a new execution, linked to the original, whose
workflow keeps the original's outputs for every earlier task (see :mod:`kasal.replay`)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError

from api.schemas import ExecutionStarted
from api.services.catalog import check_runnable
from api.services.executions import WorkflowOptions, started, temporal_error, workflow_exists
from kasal.client import new_execution_id
from kasal.constants import workflow_id_for
from kasal.db.models import Execution
from kasal.db.repositories import ExecutionRepository
from kasal.exceptions import ConflictError, NotFoundError
from kasal.execution import CrewWorkflowResult, ExecutionState
from kasal.replay import ReplaySource, plan_replay, source_from_temporal, start_replay
from kasal.spec import CrewSpec

log = logging.getLogger(__name__)


async def replay_source(client: Client, original: Execution) -> ReplaySource:
    """The original's spec, inputs and outputs: from Temporal while it retains the workflow
    (exact: the spec as it ran, outputs of a failed run too), else from the database."""
    try:
        return await source_from_temporal(client, original.id)
    except NotFoundError:
        if not original.spec:
            raise ConflictError(
                f"execution {original.id} is no longer known to Temporal and its spec was "
                "not stored: it cannot be replayed"
            ) from None
        result = CrewWorkflowResult.model_validate(original.result) if original.result else None
        return ReplaySource(
            execution_id=original.id,
            spec=CrewSpec.from_data(original.spec),
            inputs=original.inputs or {},
            crew_id=original.crew_id,
            owner=original.owner_id,
            outputs={t.name: t for t in result.tasks} if result else {},
        )


async def replay_execution(
    session: AsyncSession,
    client: Client,
    *,
    owner_id: str,
    original: Execution,
    from_task: str,
    inputs: dict[str, Any],
    options: WorkflowOptions,
) -> ExecutionStarted:
    """Start, for ``owner_id``, the replay of ``original`` (which the caller authorized)
    from ``from_task``. The replay belongs to the original's group.

    The new row is committed before its workflow starts (as every start is) and deleted if
    the workflow cannot be started; the original's row and history are not touched.
    """
    source = await replay_source(client, original)
    spec, merged, _seed = plan_replay(source, from_task, inputs)  # 404/409/422 before writes
    await check_runnable(
        session, client, spec, task_queue=options.task_queue, base_urls=options.llm_base_urls
    )
    new_id = new_execution_id()
    execution = Execution(
        id=new_id,
        workflow_id=workflow_id_for(new_id),
        owner_id=owner_id,
        group_id=original.group_id,
        crew_id=original.crew_id,
        crew_name=spec.name,
        status=ExecutionState.PENDING.value,
        spec=spec.model_dump(mode="json"),
        inputs=merged,
        replay_of=original.id,
        replay_from_task=from_task,
    )
    await ExecutionRepository(session).create(execution)
    await session.commit()
    try:
        await start_replay(
            client,
            source,
            from_task,
            inputs,
            task_queue=options.task_queue,
            execution_id=new_id,
            crew_id=original.crew_id,
            owner=owner_id,
            search_attributes=options.search_attributes,
            offline_fallback=False,  # the original's spec already says which model runs
        )
    except Exception as exc:
        if await workflow_exists(client, new_id):
            return started(execution)
        await ExecutionRepository(session).delete(execution)
        await session.commit()
        if isinstance(exc, RPCError):
            raise temporal_error(exc) from None
        raise
    log.info("execution %s replays %s from task %s", new_id, original.id, from_task)
    return started(execution)
