"""The human-input inbox: every task waiting for a person across the executions the caller
may answer (those of the groups where they are an operator or more, issue 10).

Which executions wait is asked of Temporal's visibility (``KasalStatus`` =
``waiting_for_input`` and ``KasalOwner`` = a member of those groups, among running
workflows) and of the rows; only rows of those groups count. What each waits with (the
output to review, since when, until when) is the workflow's ``waiting`` query. Item ids are
``<execution id>:<task name>``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy import and_, or_, select
from temporalio.client import Client

from api.audit import note
from api.deps import CurrentPrincipal, SessionDep, StateDep, TemporalClientDep
from api.routes.executions import FEEDBACK_TIMEOUT
from api.schemas import FeedbackOut
from api.schemas_ops import InboxAnswer, InboxItem
from api.services.access import execution_for
from kasal.access import Principal, Role
from kasal.client import ExecutionHandle
from kasal.constants import (
    CREW_WORKFLOW,
    SA_OWNER,
    SA_STATUS,
    WAITING_QUERY,
    WORKFLOW_ID_PREFIX,
    workflow_id_for,
)
from kasal.db.models import Execution, GroupMember
from kasal.db.repositories import FINISHED
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


def _answerable(principal: Principal) -> Any:
    """The rows the caller may answer: their groups where they are an operator or more,
    and (no group, not through an API key) their own."""
    groups = [g for g in principal.visible_groups() if principal.can(Role.OPERATOR, g)]
    clauses: list[Any] = [Execution.group_id.in_(groups)] if groups else []
    if principal.key_id is None:
        clauses.append(and_(Execution.group_id.is_(None), Execution.owner_id == principal.user_id))
    return or_(*clauses) if clauses else Execution.id.is_(None)


async def _owners(session: Any, principal: Principal) -> list[str]:
    """Who may have started an execution the caller may answer: the caller and the members
    of their groups (ids are 32 hex characters: safe to put in a visibility query)."""
    groups = [g for g in principal.visible_groups() if principal.can(Role.OPERATOR, g)]
    members: set[str] = {principal.user_id}
    if groups:
        query = select(GroupMember.user_id).where(GroupMember.group_id.in_(groups)).distinct()
        members.update((await session.scalars(query)).all())
    return sorted(members)


async def _candidates(client: Client, owner_ids: list[str], use_visibility: bool) -> list[str]:
    if not use_visibility or not owner_ids:
        return []
    owners = ", ".join(f"'{o}'" for o in owner_ids)
    query = (
        f"WorkflowType = '{CREW_WORKFLOW}' AND ExecutionStatus = 'Running' "
        f"AND {SA_STATUS} = '{ExecutionState.WAITING_FOR_INPUT.value}' "
        f"AND {SA_OWNER} IN ({owners})"
    )
    found = []
    async for info in client.list_workflows(query, limit=MAX_EXECUTIONS):
        if info.id.startswith(WORKFLOW_ID_PREFIX):
            found.append(info.id.removeprefix(WORKFLOW_ID_PREFIX))
    return found


@router.get("", response_model=list[InboxItem])
async def inbox(
    principal: CurrentPrincipal, session: SessionDep, state: StateDep, client: TemporalClientDep
) -> list[InboxItem]:
    """Every task waiting for an answer the caller may give (operators and up, in each of
    their groups), oldest first: the output to review, since when, and when its timeout
    answers for them."""
    answerable = _answerable(principal)
    owners = await _owners(session, principal)
    ids = set(await _candidates(client, owners, state.temporal.search_attributes))
    # Rows say so too (a status read noted it, or search attributes are not available).
    rows_query = select(Execution.id).where(answerable, Execution.status.not_in(FINISHED))
    if state.temporal.search_attributes:
        rows_query = rows_query.where(Execution.status == ExecutionState.WAITING_FOR_INPUT.value)
    ids.update((await session.scalars(rows_query.limit(MAX_EXECUTIONS))).all())
    if not ids:
        return []
    owned = {
        e.id: e
        for e in (
            await session.scalars(select(Execution).where(Execution.id.in_(ids), answerable))
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
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: TemporalClientDep,
) -> FeedbackOut:
    """Approve the waiting task's output, or give feedback to redo it (operators and up);
    409 if it no longer waits."""
    execution_id, _, task = item_id.partition(":")
    note(http, "execution.feedback", "execution", execution_id)
    execution = await execution_for(session, principal, execution_id, Role.OPERATOR)
    note(
        http,
        "execution.feedback",
        "execution",
        execution.id,
        group_id=execution.group_id,
        after={"approve": body.approve, "task": task},
    )
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
