"""Record workflow histories for the replay tests: ``python -m tests.histories.record``.

Re-record only when a change is deliberately incompatible *and* guarded by
``workflow.patched`` (see README, "Changing workflow code"); the old files must keep
replaying, so add new files rather than overwrite old ones.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from kasal.client import start_execution
from kasal.execution import EventType
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
                    handle = await start_execution(
                        client, spec, task_queue=queue, execution_id=f"history-{name}"
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
                    await handle.result()
                    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
                    path = out_dir / f"{name}.json"
                    path.write_text(history.to_json())
                    written.append(path)
            return written
        finally:
            server.stop()


if __name__ == "__main__":
    for path in asyncio.run(record(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)):
        print(path)
