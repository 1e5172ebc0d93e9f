"""Record workflow histories for the replay tests: ``python -m tests.histories.record``.

Existing files are never overwritten: histories recorded with older workflow code must keep
replaying (see README, "Changing workflow code"). To record a scenario again after a
deliberate change, rename the old file (``<name>.v<N>.json``) and keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from kasal.client import start_execution
from kasal.exceptions import KasalError
from kasal.execution import EventType, WebhookTarget
from tests.fixtures.temporal import client_for, running_worker, start_server, unique_queue
from tests.helpers import FAST_RETRY, crew

HERE = Path(__file__).parent
TOOLED = {
    "name": "analyst",
    "role": "Analyst",
    "goal": "Analyse",
    "tools": ["calculator"],
    "llm": {
        "model": "offline/t",
        "options": {"script": [{"tool": "calculator", "input": {"expression": "2 + 2"}}]},
    },
}
FLAKY = {
    "name": "flaky",
    "role": "Flaky",
    "goal": "g",
    "llm": {"model": "offline/f", "options": {"fail_first": 2}},
}

SCENARIOS = {
    "sequential_context_tools": crew(
        [
            {"name": "gather", "description": "Gather facts on {topic}"},
            {"name": "write", "description": "Write it up"},
            {"name": "check", "description": "Check", "context": ["gather", "write"]},
        ],
        agents=[TOOLED],
        inputs={"topic": "tea"},
    ),
    "parallel_and_retry": crew(
        [
            {"name": "a", "description": "Part A", "async_execution": True},
            {
                "name": "b",
                "description": "Part B",
                "async_execution": True,
                "context": [],
                "agent": "flaky",
                "retry": FAST_RETRY,
            },
            {"name": "join", "description": "Join", "context": ["a", "b"]},
        ],
        agents=[TOOLED, FLAKY],
    ),
    "human_input_rerun": crew(
        [{"name": "draft", "description": "Draft", "human_input": True}],
    ),
    "hierarchical": crew(
        [{"name": "memo", "description": "A memo"}],
        agents=[TOOLED, FLAKY],
        process="hierarchical",
        manager_llm={
            "model": "offline/manager",
            "options": {
                "script": [
                    {"delegate": "analyst", "task": "Find facts"},
                    {"delegate": "flaky", "task": "Check them"},
                    {"final": "memo"},
                ]
            },
        },
    ),
    "failed_non_retryable": crew(
        [{"name": "t", "description": "Fails", "agent": "flaky"}],
        agents=[
            {
                **FLAKY,
                "llm": {"model": "offline/f", "options": {"fail_first": 9, "fail_with": "auth"}},
            }
        ],
    ),
    "cancelled": crew(
        [{"name": "slow", "description": "Slow"}, {"name": "never", "description": "Never"}],
        agents=[{**FLAKY, "llm": {"model": "offline/s", "options": {"latency_ms": 30_000}}}],
        timeout={"start_to_close": 120, "heartbeat": 2},
    ),
    # Issue 9: a graceful stop while the first task runs; webhook deliveries as children.
    "stopped": crew(
        [
            {"name": "first", "description": "First"},
            {"name": "second", "description": "Second"},
            {"name": "third", "description": "Third"},
        ],
        agents=[{**FLAKY, "llm": {"model": "offline/s", "options": {"latency_ms": 1500}}}],
    ),
    "webhooks": crew(
        [{"name": "one", "description": "One"}, {"name": "two", "description": "Two"}],
    ),
}
#: Extra start options per scenario.
START_OPTIONS: dict[str, dict[str, Any]] = {
    "webhooks": {
        "webhooks": [
            WebhookTarget(
                subscription_id="0" * 32, events=["task_completed", "execution_completed"]
            )
        ]
    },
}


async def record(out_dir: Path = HERE) -> list[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        server = await start_server(Path(tmp))
        try:
            client = await client_for(server)
            queue = unique_queue("record")
            written = []
            async with running_worker(client, queue):
                for name, spec in SCENARIOS.items():
                    path = out_dir / f"{name}.json"
                    if path.exists():
                        continue
                    handle = await start_execution(
                        client,
                        spec,
                        task_queue=queue,
                        execution_id=f"history-{name}",
                        **START_OPTIONS.get(name, {}),
                    )
                    if name == "human_input_rerun":
                        reviews = 0
                        async for event in handle.events():
                            if event.type == EventType.HUMAN_INPUT_REQUESTED:
                                reviews += 1
                                if reviews == 1:
                                    await handle.feedback(approve=False, feedback="Shorter")
                                else:
                                    await handle.feedback(approve=True)
                    if name == "stopped":
                        async for event in handle.events():
                            if event.type == EventType.TASK_STARTED:
                                await handle.stop(by="recorder", reason="enough")
                                break
                    if name == "cancelled":
                        async for event in handle.events():
                            if event.type == EventType.TASK_STARTED:
                                await handle.cancel()
                                break
                    with contextlib.suppress(KasalError):
                        await handle.result()
                    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
                    path.write_text(history.to_json())
                    written.append(path)
            return written
        finally:
            server.stop()


if __name__ == "__main__":
    for path in asyncio.run(record(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)):
        print(path)
