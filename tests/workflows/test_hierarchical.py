"""Hierarchical crews: every manager decision and every delegation is its own activity."""

from __future__ import annotations

import asyncio

import pytest

from kasal.client import start_execution
from kasal.exceptions import ExecutionFailedError
from kasal.execution import EventType
from tests.fixtures.llm_stub import ModelBehaviour
from tests.fixtures.worker_process import crash_mid_call_and_resume
from tests.helpers import crew, stub_agent

DELEGATE_RESEARCH = (
    "Action: delegate\nCoworker: researcher\nTask: Find three facts about tea\nContext: for a memo"
)
DELEGATE_WRITING = (
    "Action: delegate\nCoworker: writer\nTask: Write the memo from the facts\n"
    "Context: keep it short"
)


def managed(manager_llm, agents, **extra):
    return crew(
        [{"name": "memo", "description": "Produce a memo on tea", "agent": agents[0]["name"]}],
        agents=agents,
        process="hierarchical",
        manager_llm=manager_llm,
        **extra,
    )


def offline(name):
    return {"name": name, "role": name.title(), "goal": f"{name} work", "model": f"offline/{name}"}


async def test_manager_delegates_and_answers(temporal_client, task_queue, worker):
    manager = {
        "model": "offline/manager",
        "options": {
            "script": [
                {"delegate": "researcher", "task": "Find facts", "context": "tea"},
                {"delegate": "Writer", "task": "Write it"},  # by role works too
                {"final": "The memo, reviewed."},
            ]
        },
    }
    spec = managed(manager, [offline("researcher"), offline("writer")])
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    result = await handle.result()
    assert result.output == "The memo, reviewed."
    events = [e async for e in handle.events()]
    delegations = [e for e in events if e.type == EventType.DELEGATION]
    assert [(e.data["coworker"], e.data["work"]) for e in delegations] == [
        ("researcher", "Find facts"),
        ("writer", "Write it"),
    ]
    coworker_calls = [e.agent for e in events if e.type == EventType.LLM_CALL]
    assert coworker_calls == ["manager", "researcher", "manager", "writer", "manager"]
    history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
    ids = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert ids[:5] == [
        "memo.manager.1",
        "memo.delegate.1.researcher",
        "memo.manager.2",
        "memo.delegate.2.writer",
        "memo.manager.3",
    ]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (["Action: delegate\nCoworker: ghost\nTask: haunt"], "ghost"),
        ([{"delegate": "researcher", "task": "Same thing"}] * 5, "loops"),
        (["I am not sure what to do."] * 5, "no final answer within 3 steps"),
    ],
)
async def test_a_bad_manager_ends_with_a_clear_error(
    temporal_client, task_queue, worker, script, message
):
    manager = {"model": "offline/manager", "options": {"script": script}}
    spec = managed(manager, [offline("researcher")], manager_max_steps=3)
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    with pytest.raises(ExecutionFailedError, match=message):
        await asyncio.wait_for(handle.result(), 60)


async def test_crash_between_delegations_does_not_redo_the_first(
    temporal_server, temporal_client, task_queue, llm_stub, tmp_path
):
    llm_stub.behaviours["boss"] = ModelBehaviour(
        script=[DELEGATE_RESEARCH, DELEGATE_WRITING, "Final Answer: memo done"]
    )
    llm_stub.behaviours["writer"] = ModelBehaviour(block_at=1)  # the 2nd delegation hangs
    researcher, writer = (
        stub_agent("researcher", llm_stub.base_url),
        stub_agent("writer", llm_stub.base_url),
    )
    spec = managed(
        {"model": "compatible/boss", "base_url": llm_stub.base_url},
        [researcher, writer],
        timeout={"start_to_close": 120, "heartbeat": 2},
    )
    result, _events = await crash_mid_call_and_resume(
        temporal_server.address, temporal_client, task_queue, spec, llm_stub, tmp_path
    )
    assert result.output == "memo done"
    assert len(llm_stub.requests_for("researcher")) == 1  # the first delegation: not redone
    assert len(llm_stub.requests_for("boss")) == 3  # no manager decision redone either
    assert len(llm_stub.requests_for("writer")) == 2  # the one in flight, once more


async def test_the_manager_reads_large_results_in_full(
    temporal_client, task_queue, worker, llm_stub
):
    """Delegation results too large for history travel as blobs, yet the manager sees all."""
    llm_stub.behaviours["boss"] = ModelBehaviour(script=[DELEGATE_RESEARCH, "Final Answer: ok"])
    llm_stub.behaviours["researcher"] = ModelBehaviour(answer_chars=40_000)
    researcher = {**stub_agent("researcher", llm_stub.base_url), "tools": []}
    spec = managed({"model": "compatible/boss", "base_url": llm_stub.base_url}, [researcher])
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    assert (await handle.result()).output == "ok"
    (research,) = llm_stub.requests_for("researcher")
    full = research.answer.split("Final Answer: ", 1)[-1]
    assert len(full) >= 40_000
    second_decision = llm_stub.requests_for("boss")[1]
    assert full in second_decision.prompt
