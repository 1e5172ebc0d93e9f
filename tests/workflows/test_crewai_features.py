"""Structured outputs, guardrails, planning and output files, run durably; guardrail
retries and planning journaled, so a crash mid-retry repeats at most the call in flight."""

from __future__ import annotations

import asyncio
import json

import pytest

from kasal.client import start_execution
from kasal.settings import get_settings
from kasal.spec import CrewSpec
from tests.fixtures.temporal import unique_queue
from tests.fixtures.worker_process import WorkerProcess
from tests.helpers import FAST_RETRY

REPORT = {
    "type": "object",
    "title": "Report",
    "properties": {
        "title": {"type": "string"},
        "points": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "points"],
}
#: The analyst's answers, in order: a draft, the guardrail's verdict on it (rejected), the
#: redo, the verdict on the redo (accepted).
SCRIPT = [
    {"final": json.dumps({"title": "draft", "points": ["a"]})},
    {"final": json.dumps({"valid": False, "feedback": "Name the tea in the title."})},
    {"final": json.dumps({"title": "Green tea", "points": ["a", "b"]})},
    {"final": json.dumps({"valid": True, "feedback": None})},
]


def spec(latency_ms: int = 0, **timeout) -> CrewSpec:
    return CrewSpec.from_data(
        {
            "name": "structured",
            "planning": True,
            "planning_llm": "offline/planner",
            "retry": FAST_RETRY,
            **({"timeout": timeout} if timeout else {}),
            "agents": [
                {
                    "name": "analyst",
                    "role": "Analyst",
                    "goal": "Report on {topic}",
                    "llm": {
                        "model": "offline/analyst",
                        "options": {"script": SCRIPT, "latency_ms": latency_ms},
                    },
                },
                {"name": "scout", "role": "Scout", "goal": "Scout", "llm": "offline/scout"},
            ],
            "tasks": [
                {
                    "name": "scouting",
                    "description": "Scout {topic}",
                    "expected_output": "notes",
                    "agent": "scout",
                },
                {
                    "name": "report",
                    "description": "Report on {topic}",
                    "expected_output": "a report",
                    "agent": "analyst",
                    "output_pydantic": REPORT,
                    "guardrail": "The title names the tea",
                    "guardrail_max_retries": 2,
                    "output_file": "reports/{topic}.json",
                },
            ],
            "inputs": {"topic": "tea"},
        }
    )


@pytest.fixture
def files_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KASAL_FILES_DIR", str(tmp_path / "files"))
    get_settings.cache_clear()
    yield tmp_path / "files"
    get_settings.cache_clear()


async def test_structured_output_guardrail_planning_and_output_file(
    temporal_client, task_queue, worker, files_dir
):
    handle = await start_execution(temporal_client, spec(), task_queue=task_queue)
    result = await handle.result()
    report = result.tasks[-1]
    assert result.json_dict == report.json_dict == {"title": "Green tea", "points": ["a", "b"]}
    assert report.output_format == "pydantic" and report.output_file == "reports/tea.json"
    assert json.loads((files_dir / "reports" / "tea.json").read_text())["title"] == "Green tea"
    events = await handle.trace()
    planned = [e for e in events if e.type == "planning_completed"]
    assert len(planned) == 1 and set(planned[0].data["plans"]) == {"scouting", "report"}
    done = next(e for e in events if e.type == "task_completed" and e.task == "report")
    assert done.data["llm_calls"] == 4  # draft, rejected, redo, accepted
    # Each task was given its part of the plan, as CrewAI appends it to the description.
    history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    inputs = [
        json.loads(a.input.payloads[0].data)
        for a in scheduled
        if a.activity_type.name == "run_task"
    ]
    assert all("[offline plan" in (i["plan"] or "") for i in inputs)
    status = await handle.status()
    assert status.tasks[-1].json_dict == result.json_dict


async def test_a_crash_mid_guardrail_retry_repeats_only_the_call_in_flight(
    temporal_server, temporal_client, tmp_path
):
    queue = unique_queue()
    env = {"KASAL_FILES_DIR": str(tmp_path / "files")}
    first = WorkerProcess(temporal_server.address, queue, tmp_path / "w1", **env)
    second = WorkerProcess(temporal_server.address, queue, tmp_path / "w2", **env)
    await asyncio.to_thread(first.start)
    try:
        crew = spec(latency_ms=1200, heartbeat=2)
        handle = await start_execution(temporal_client, crew, task_queue=queue)

        async def analyst_calls() -> int:
            events = await handle.trace()
            return sum(1 for e in events if e.type == "llm_call" and e.task == "report")

        for _ in range(400):
            if await analyst_calls() >= 2:
                break  # the draft and the rejecting verdict are paid: the redo is in flight
            await asyncio.sleep(0.05)
        first.kill()
        await asyncio.to_thread(second.start)
        result = await asyncio.wait_for(handle.result(), 90)
        events = await handle.trace()
    finally:
        first.kill()
        second.stop()
    assert result.json_dict == {"title": "Green tea", "points": ["a", "b"]}
    done = next(e for e in events if e.type == "task_completed" and e.task == "report")
    assert done.attempt == 2
    # The draft and the verdict came from the journal; the redo (in flight at the crash)
    # and the last verdict were paid again: nothing else.
    assert done.data["replayed_calls"] == 2 and done.data["llm_calls"] == 2
    # Planning ran once, before the crash, and was not redone.
    assert sum(1 for e in events if e.type == "planning_completed") == 1


async def test_delegation_among_the_crews_agents_goes_through_the_journal(
    temporal_client, task_queue, worker
):
    delegate = {
        "tool": "Delegate work to coworker",
        "input": {
            "task": "Write one line about tea",
            "context": "for a menu",
            "coworker": "Writer",
        },
    }
    crew = CrewSpec.from_data(
        {
            "name": "delegating",
            "agents": [
                {
                    "name": "lead",
                    "role": "Lead",
                    "goal": "Lead",
                    "allow_delegation": True,
                    "llm": {
                        "model": "offline/lead",
                        "options": {"script": [delegate, {"final": "Menu line approved"}]},
                    },
                },
                {"name": "writer", "role": "Writer", "goal": "Write", "llm": "offline/writer"},
            ],
            "tasks": [{"name": "menu", "description": "Make the menu", "agent": "lead"}],
        }
    )
    handle = await start_execution(temporal_client, crew, task_queue=task_queue)
    result = await handle.result()
    assert result.output == "Menu line approved"
    events = await handle.trace()
    tool = next(e for e in events if e.type == "tool_call")
    assert tool.data["tool"] == "Delegate work to coworker"
    assert "[offline/writer]" in tool.data["output"]  # the Writer did the work
    done = next(e for e in events if e.type == "task_completed")
    # The lead's delegation step, the writer's answer and the lead's final answer: all three
    # calls went through the task's journal (a retry would replay the finished delegation).
    assert done.data["llm_calls"] == 3
