"""What the Temporal Web UI and CLI say about a running execution."""

from __future__ import annotations

import asyncio
import subprocess

from kasal.client import start_execution, temporal_cli
from kasal.execution import EventType
from tests.helpers import crew, offline_agent


async def cli(*args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [temporal_cli(), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_describe_shows_the_crew_and_what_runs_now(
    temporal_client, temporal_server, task_queue, worker
):
    spec = crew(
        [
            {"name": "gather", "description": "Gather"},
            {"name": "write", "description": "Write"},
        ],
        agents=[offline_agent(latency_ms=3000)],
        name="explained",
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    async for event in handle.events():
        if event.type == EventType.TASK_STARTED and event.task == "write":
            break  # "gather" is done (one LLM call), "write" waits on its slow model
    address = ["--address", temporal_server.address, "--workflow-id", handle.workflow_id]
    text = await cli("workflow", "describe", *address)
    assert 'StaticSummary  "crew explained (sequential, 2 tasks)"' in text
    assert "1. `gather` by analyst (Analyst)" in text and "2. `write` by analyst" in text
    assert "**process** sequential" in text

    current = await cli("workflow", "metadata", *address)
    details = current.split("Current Details:", 1)[1]
    assert "**State** running · 1/2 tasks done" in details
    assert "**Task** `write` (analyst): running, attempt 1, 0 LLM calls so far" in details
    assert "**Waiting for human input:** no" in details
    # Every query, signal and update of Kasal's says what it is (the SDK's own excepted).
    definitions = current.split("Current Details:", 1)[0].splitlines()
    named = [line.split() for line in definitions if line.startswith("    ")]
    sdk_own = {"__stack_trace", "__enhanced_stack_trace", "__temporal_workflow_metadata"}
    undescribed = [words[0] for words in named if len(words) == 1 and words[0] not in sdk_own]
    assert not undescribed, undescribed
    assert {"status", "trace", "outputs", "feedback", "activity_events"} <= {w[0] for w in named}
    await handle.cancel()
