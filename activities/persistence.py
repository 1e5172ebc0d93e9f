"""Activities that write executions to the application database."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.models import RECORD_EXECUTION, RecordExecutionInput, RecordExecutionResult
from activities.resets import mark_resets, replaced_record
from kasal import metrics
from kasal.blobs import BlobStore, resolve_result
from kasal.constants import TRACE_QUERY
from kasal.db.journal import JournalStore
from kasal.db.models import Execution
from kasal.db.repositories import ExecutionRepository
from kasal.execution import Event, EventType, TraceQueryInput

log = logging.getLogger(__name__)

#: Events read per trace query page.
TRACE_PAGE = 500


async def read_trace(workflow_id: str, run_id: str | None = None) -> list[Event]:
    """Every event of a run of the calling activity's workflow (by default the latest run),
    page by page through the trace query."""
    handle = activity.client().get_workflow_handle(workflow_id, run_id=run_id)
    events: list[Event] = []
    while True:
        page = await handle.query(
            TRACE_QUERY,
            TraceQueryInput(from_offset=len(events), limit=TRACE_PAGE),
            result_type=list[Event],
        )
        events.extend(page)
        if len(page) < TRACE_PAGE:
            return events


def _count_finished(state: str, events: list[Event]) -> None:
    """Metrics of a recorded execution: its final state and its human-input waits."""
    metrics.EXECUTIONS_FINISHED.labels(state=state).inc()
    waits = sum(1 for e in events if e.type == EventType.HUMAN_INPUT_REQUESTED)
    if waits:
        metrics.HUMAN_INPUT_WAITS.inc(waits)


class PersistenceActivities:
    """Writes finished executions and their traces to the database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        journal: JournalStore | None = None,
    ) -> None:
        #: None only where no database is wanted (then the trace is read and counted).
        self.sessions = sessions
        self.journal = journal

    @activity.defn(name=RECORD_EXECUTION)
    async def record_execution(self, data: RecordExecutionInput) -> RecordExecutionResult:
        """Store the final status, result and trace of an execution.

        Idempotent, as retries need: the row is upserted and the trace replaced in one
        transaction, so an attempt either writes everything or nothing.
        """
        events = data.events if data.events is not None else await read_trace(data.workflow_id)
        if data.status.resets:
            events = await mark_resets(data.workflow_id, events, read_trace)
        if self.sessions is None:
            return RecordExecutionResult(events=len(events))
        result = data.result
        if result is not None:
            # The database keeps whole outputs: resolve the ones kept outside history.
            result = await resolve_result(result, BlobStore(self.sessions))
        async with self.sessions() as session, session.begin():
            if data.status.resets:
                # A reset's run writes the row an earlier run wrote: keep what it replaces.
                replaced = replaced_record(
                    await session.get(Execution, data.status.execution_id), data.status.resets
                )
                last = next(e for e in reversed(events) if e.type == EventType.EXECUTION_RESET)
                if replaced is not None:
                    last.data["replaced_record"] = replaced
            await ExecutionRepository(session).record_finished(
                workflow_id=data.workflow_id,
                status=data.status,
                result=result,
                events=events,
                owner=data.owner,
            )
        _count_finished(data.status.state.value, events)
        if self.journal is not None:
            # The execution is over: no attempt of it will replay its journal again.
            await self.journal.forget(data.workflow_id)
        log.info("recorded execution %s (%d events)", data.status.execution_id, len(events))
        return RecordExecutionResult(events=len(events))
