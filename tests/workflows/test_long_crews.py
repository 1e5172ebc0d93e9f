"""Long crews continue as new before history limits; the event stream spans every run."""

from __future__ import annotations

import time

from kasal.client import ExecutionHandle
from kasal.constants import CREW_WORKFLOW, workflow_id_for
from kasal.execution import CrewWorkflowInput, CrewWorkflowResult, EventType
from tests.helpers import crew


async def test_a_300_task_crew_runs_to_the_end_across_runs(temporal_client, task_queue, worker):
    tasks = 300
    spec = crew([{"name": f"t{n}", "description": f"Step {n}"} for n in range(tasks)])
    execution_id = f"long-{time.time_ns()}"
    await temporal_client.start_workflow(
        CREW_WORKFLOW,
        CrewWorkflowInput(execution_id=execution_id, spec=spec, tasks_per_run=120),
        id=workflow_id_for(execution_id),
        task_queue=task_queue,
        result_type=CrewWorkflowResult,
    )
    handle = ExecutionHandle(temporal_client, execution_id)
    events = [e async for e in handle.events(poll_cooldown=0.2)]
    result = await handle.result()

    assert [t.name for t in result.tasks] == [f"t{n}" for n in range(tasks)]
    assert "Step 299" in result.output
    assert [e.offset for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds.count(EventType.EXECUTION_STARTED) == 1
    assert kinds.count(EventType.EXECUTION_CONTINUED) == 2  # 300 tasks, 120 per run
    assert kinds.count(EventType.TASK_COMPLETED) == tasks
    assert kinds[-1] == EventType.EXECUTION_COMPLETED
    status = await handle.status()
    assert status.state == "completed" and all(t.state == "completed" for t in status.tasks)
    assert status.token_usage.requests == tasks
    history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
    first_event = history.events[0].workflow_execution_started_event_attributes
    assert first_event.continued_execution_run_id, "the last run continued an earlier one"
    assert len(history.events) < 2000
