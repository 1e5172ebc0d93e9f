"""Human input: a task pauses after its output until a human approves it or asks for changes."""

from __future__ import annotations

import asyncio

import pytest

from kasal.client import ExecutionHandle, start_execution
from kasal.exceptions import ConflictError, ExecutionFailedError
from kasal.execution import EventType, ExecutionState, TaskState
from tests.helpers import crew


async def wait_for_review(handle: ExecutionHandle, count: int = 1):
    seen = 0
    async for event in handle.events():
        if event.type == EventType.HUMAN_INPUT_REQUESTED:
            seen += 1
            if seen == count:
                return event
    raise AssertionError("no human_input_requested event")


def reviewed_crew(**task):
    return crew(
        [
            {"name": "draft", "description": "Draft the memo", "human_input": True, **task},
            {"name": "publish", "description": "Publish it"},
        ]
    )


async def test_approve_continues_with_the_reviewed_output(temporal_client, task_queue, worker):
    handle = await start_execution(temporal_client, reviewed_crew(), task_queue=task_queue)
    requested = await wait_for_review(handle)
    assert requested.task == "draft" and "Draft the memo" in requested.data["output"]
    status = await handle.status()
    assert status.state == ExecutionState.WAITING_FOR_INPUT
    assert status.tasks[0].state == TaskState.WAITING_FOR_INPUT
    answer = await handle.feedback(approve=True)
    assert answer.approved and not answer.rerun and answer.task == "draft"
    result = await handle.result()
    assert result.tasks[0].raw == requested.data["output"]


async def test_feedback_reruns_the_task_with_it(temporal_client, task_queue, worker):
    handle = await start_execution(temporal_client, reviewed_crew(), task_queue=task_queue)
    first = await wait_for_review(handle)
    answer = await handle.feedback(approve=False, feedback="Make it shorter, cite sources")
    assert answer.rerun
    second = await wait_for_review(handle, count=2)
    # The re-run saw the feedback (the offline model's answer is derived from its prompt).
    assert second.data["output"] != first.data["output"]
    await handle.feedback(approve=True, task="draft")
    result = await handle.result()
    assert result.tasks[0].raw == second.data["output"]
    events = [e async for e in handle.events()]
    starts = [e for e in events if e.type == EventType.TASK_STARTED and e.task == "draft"]
    assert [e.data["rerun"] for e in starts] == [False, True]


async def test_feedback_is_validated(temporal_client, task_queue, worker):
    handle = await start_execution(temporal_client, reviewed_crew(), task_queue=task_queue)
    with pytest.raises(ConflictError):
        await handle.feedback(approve=True, task="publish")  # not waiting
    await wait_for_review(handle)
    with pytest.raises(ConflictError, match="feedback"):
        await handle.feedback(approve=False, feedback="  ")
    with pytest.raises(ConflictError, match="not waiting"):
        await handle.feedback(approve=True, task="publish")
    await handle.feedback(approve=True)
    await handle.result()


@pytest.mark.parametrize(("outcome", "ends"), [("approve", "completed"), ("fail", "failed")])
async def test_review_timeout_takes_the_configured_outcome(
    temporal_client, task_queue, worker, outcome, ends
):
    spec = reviewed_crew(human_input_timeout=1, human_input_timeout_outcome=outcome)
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    if ends == "completed":
        result = await asyncio.wait_for(handle.result(), 30)
        assert len(result.tasks) == 2
    else:
        with pytest.raises(ExecutionFailedError, match="no human feedback"):
            await asyncio.wait_for(handle.result(), 30)


async def test_a_worker_stopping_under_a_waiting_crew_stops_cleanly(
    temporal_server, temporal_client, task_queue, tmp_path, settings
):
    """A ``kasal worker`` that stops while a crew waits for a human runs no workflow code as
    it evicts it (no ``_NotInWorkflowEventLoopError``), and another worker carries on."""
    from tests.fixtures.temporal import running_worker
    from tests.fixtures.worker_process import WorkerProcess

    first = WorkerProcess(temporal_server.address, task_queue, tmp_path / "w1")
    await asyncio.to_thread(first.start)
    try:
        handle = await start_execution(temporal_client, reviewed_crew(), task_queue=task_queue)
        await wait_for_review(handle)
        await asyncio.to_thread(first.stop)
        assert "NotInWorkflowEventLoop" not in "".join(first.output)
    finally:
        first.kill()
    async with running_worker(temporal_client, task_queue, settings):
        await handle.feedback(approve=True)
        result = await asyncio.wait_for(handle.result(), 60)
    assert [t.name for t in result.tasks] == ["draft", "publish"]
