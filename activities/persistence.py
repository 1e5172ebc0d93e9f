"""Activities that write executions to the application database."""

from __future__ import annotations

import logging

from temporalio import activity

from activities.models import RECORD_EXECUTION, RecordExecutionInput, RecordExecutionResult
from kasal.constants import TRACE_QUERY
from kasal.execution import Event, TraceQueryInput

log = logging.getLogger(__name__)

#: Events read per trace query page.
TRACE_PAGE = 500


async def read_trace(workflow_id: str) -> list[Event]:
    """Every event of the calling activity's workflow, page by page through the trace query."""
    handle = activity.client().get_workflow_handle(workflow_id)
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


class PersistenceActivities:
    """Writes finished executions and their traces to the database."""

    @activity.defn(name=RECORD_EXECUTION)
    async def record_execution(self, data: RecordExecutionInput) -> RecordExecutionResult:
        """Store the final status, result and trace of an execution."""
        events = await read_trace(data.workflow_id)
        # TODO(issue 3): write to the database through kasal.db repositories.
        return RecordExecutionResult(events=len(events))
