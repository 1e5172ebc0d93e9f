"""Killing workers with SIGKILL: crews finish, finished work is never paid for twice."""

from __future__ import annotations

from kasal.execution import EventType
from tests.fixtures.llm_stub import ModelBehaviour
from tests.fixtures.worker_process import crash_mid_call_and_resume
from tests.helpers import crew, stub_agent

FAST_DEAD_WORKER = {"start_to_close": 120, "heartbeat": 2}


async def test_killed_worker_resumes_crew_without_rerunning_finished_tasks(
    temporal_server, temporal_client, task_queue, llm_stub, tmp_path
):
    llm_stub.behaviours["durable"] = ModelBehaviour(block_at=3)  # task three's call hangs
    agent = stub_agent("durable", llm_stub.base_url)
    agent["tools"] = []
    descriptions = [f"Step {n} of the plan" for n in range(1, 5)]
    spec = crew(
        [{"name": f"t{n}", "description": d} for n, d in enumerate(descriptions, 1)],
        agents=[agent],
        timeout=FAST_DEAD_WORKER,
    )
    result, _events = await crash_mid_call_and_resume(
        temporal_server.address, temporal_client, task_queue, spec, llm_stub, tmp_path
    )

    calls = {d: sum(d in r.prompt for r in llm_stub.requests_for("durable")) for d in descriptions}
    assert calls == {descriptions[0]: 1, descriptions[1]: 1, descriptions[2]: 2, descriptions[3]: 1}
    assert [t.attempts for t in result.tasks] == [1, 1, 2, 1]
    assert result.output == llm_stub.answer_for(
        "durable", llm_stub.requests_for("durable")[-1].prompt
    )


async def test_killed_during_fourth_llm_call_costs_exactly_one_repeated_call(
    temporal_server, temporal_client, task_queue, llm_stub, tmp_path
):
    # One task, five LLM calls (four calculator steps, then the answer); the 4th call hangs.
    llm_stub.behaviours["journal"] = ModelBehaviour(tool_steps=4, block_at=4)
    spec = crew(
        [{"name": "long", "description": "Compute four things, then answer"}],
        agents=[stub_agent("journal", llm_stub.base_url)],
        timeout=FAST_DEAD_WORKER,
    )
    result, events = await crash_mid_call_and_resume(
        temporal_server.address, temporal_client, task_queue, spec, llm_stub, tmp_path
    )

    requests = llm_stub.requests_for("journal")
    prompts = [r.prompt for r in requests]
    assert len(requests) == 6, "5 calls + exactly one repeated (the one in flight at the kill)"
    assert prompts[3] == prompts[4], "the 4th call was the one repeated"
    assert len(set(prompts)) == 5
    assert result.tasks[0].attempts == 2
    assert result.output == llm_stub.answer_for("journal", prompts[-1])
    second_attempt = [e for e in events if e.type == EventType.LLM_CALL and e.attempt == 2]
    assert [e.data["replayed"] for e in second_attempt] == [True, True, True, False, False]
