"""What a worker keeps in memory per running execution: its knob, and executions that do
not fit in it still finish (evicted, then replayed from their history)."""

from __future__ import annotations

import asyncio

from kasal.client import start_execution
from tests.helpers import crew, offline_agent
from workflows.worker import running_worker


async def test_more_running_executions_than_cached_workflows_all_finish(
    temporal_client, task_queue, settings
):
    small = settings.model_copy(update={"max_cached_workflows": 2})
    slow = offline_agent("offline/slow", latency_ms=300)
    spec = crew([{"name": f"t{i}", "description": f"Step {i}"} for i in range(3)], agents=[slow])
    async with running_worker(temporal_client, task_queue, small):
        handles = [
            await start_execution(temporal_client, spec, task_queue=task_queue) for _ in range(6)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    assert all(len(r.tasks) == 3 and not r.stopped for r in results)
