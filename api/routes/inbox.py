"""The human-input inbox: every task waiting for a person across the caller's executions.

Which executions wait is asked of Temporal's visibility (``KasalStatus`` =
``waiting_for_input`` and ``KasalOwner`` = the caller, among running workflows); what each
waits with (the output to review, since when, until when) is the workflow's ``waiting``
query. Item ids are ``<execution id>:<task name>``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import select
from temporalio.client import Client

from api.deps import CurrentUser, SessionDep, StateDep, TemporalClientDep
from api.routes.executions import FEEDBACK_TIMEOUT
from api.schemas import FeedbackOut
from api.schemas_ops import InboxAnswer, InboxItem
from kasal.client import ExecutionHandle
from kasal.constants import (
    CREW_WORKFLOW,
    SA_OWNER,
    SA_STATUS,
    WAITING_QUERY,
    WORKFLOW_ID_PREFIX,
    workflow_id_for,
)
from kasal.db.models import Execution
from kasal.db.repositories import FINISHED, ExecutionRepository
from kasal.exceptions import ConflictError, NotFoundError, TemporalUnavailableError
from kasal.execution import ExecutionState, WaitingTask

log = logging.getLogger(__name__)
router = APIRouter(prefix="/inbox", tags=["inbox"])

#: Executions looked at per request, and queries in flight at once.
MAX_EXECUTIONS = 500
QUERY_CONCURRENCY = 20
ItemId = Annotated[
    str,
    Path(
        pattern=r"^[0-9a-f]{32}:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$",
        description="<execution id>:<task name>",
    ),
]


async def _candidates(client: Client, owner_id: str, use_visibility: bool) -> list[str]:
    if not use_visibility:
        return []
    query = (
        f"WorkflowType = '{CREW_WORKFLOW}' AND ExecutionStatus = 'Running' "
        f"AND {SA_STATUS} = '{ExecutionState.WAITING_FOR_INPUT.value}' "
        f"AND {SA_OWNER} = '{owner_id}'"
    )
    found = []
    async for info in client.list_workflows(query, limit=MAX_EXECUTIONS):
        if info.id.startswith(WORKFLOW_ID_PREFIX):
            found.append(info.id.removeprefix(WORKFLOW_ID_PREFIX))
    return found


@router.get("", response_model=list[InboxItem])
async def inbox(
    user: CurrentUser, session: SessionDep, state: StateDep, client: TemporalClientDep
) -> list[InboxItem]:
    """Every task waiting for the caller, oldest first: the output to review, since when,
    and when its timeout answers for them."""
    ids = set(await _candidates(client, user.id, state.temporal.search_attributes))
    # Rows say so too (a status read noted it, or search attributes are not available).
    rows_query = select(Execution.id).where(
        Execution.owner_id == user.id, Execution.status.not_in(FINISHED)
    )
    if state.temporal.search_attributes:
        rows_query = rows_query.where(Execution.status == ExecutionState.WAITING_FOR_INPUT.value)
    ids.update((await session.scalars(rows_query.limit(MAX_EXECUTIONS))).all())
    if not ids:
        return []
    owned = {
        e.id: e
        for e in (
            await session.scalars(
                select(Execution).where(Execution.id.in_(ids), Execution.owner_id == user.id)
            )
        ).all()
    }
    await session.commit()  # no connection held while Temporal answers
    limit = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def waiting(execution_id: str) -> list[WaitingTask]:
        async with limit:
            handle = client.get_workflow_handle(workflow_id_for(execution_id))
            try:
                return await asyncio.wait_for(
                    handle.query(WAITING_QUERY, result_type=list[WaitingTask]), 5.0
                )
            except Exception as exc:  # not running any more, no worker, an old workflow
                log.info("inbox: %s did not answer (%s)", execution_id, type(exc).__name__)
                return []

    answers = await asyncio.gather(*(waiting(i) for i in owned))
    items = [
        InboxItem(
            id=f"{execution_id}:{task.task}",
            execution_id=execution_id,
            crew_name=owned[execution_id].crew_name,
            task=task.task,
            agent=task.agent,
            output=task.output,
            since=task.since,
            timeout_seconds=task.timeout_seconds,
            expires_at=task.since + timedelta(seconds=task.timeout_seconds)
            if task.timeout_seconds
            else None,
        )
        for execution_id, tasks in zip(owned, answers, strict=True)
        for task in tasks
    ]
    return sorted(items, key=lambda i: i.since)


@router.post("/{item_id}", response_model=FeedbackOut)
async def answer(
    item_id: ItemId,
    body: InboxAnswer,
    user: CurrentUser,
    session: SessionDep,
    client: TemporalClientDep,
) -> FeedbackOut:
    """Approve the waiting task's output, or give feedback to redo it; 409 if it no longer
    waits."""
    execution_id, _, task = item_id.partition(":")
    execution = await ExecutionRepository(session).get(execution_id, user.id)
    if execution.status in FINISHED:
        raise ConflictError(f"execution {execution_id} has finished ({execution.status})")
    await session.commit()
    handle = ExecutionHandle(client, execution.id)
    try:
        result = await asyncio.wait_for(
            handle.feedback(approve=body.approve, feedback=body.feedback, task=task),
            FEEDBACK_TIMEOUT,
        )
    except TimeoutError:
        raise TemporalUnavailableError(
            "the execution did not answer in time: is a worker running?"
        ) from None
    except NotFoundError:
        raise
    return FeedbackOut(execution_id=execution.id, **result.model_dump())
