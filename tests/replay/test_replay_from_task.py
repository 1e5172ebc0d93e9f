"""Re-running an execution from a task: earlier outputs kept, no provider call for them."""

from __future__ import annotations

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from kasal.client import start_execution
from kasal.replay import source_from_temporal, start_replay
from tests.api.test_executions import start
from tests.fixtures.api import wait_for_status
from tests.helpers import crew, offline_agent, stub_agent

EXECUTIONS = "/api/v1/executions"


def four_tasks(base_url: str) -> dict:
    return {
        "name": "four",
        "agents": [stub_agent("writer", base_url)],
        "tasks": [
            {
                "name": f"t{i}",
                "description": f"Task number {i} on {{topic}}",
                "expected_output": "A sentence",
                "agent": "writer",
            }
            for i in range(1, 5)
        ],
    }


async def test_replay_from_task_three_keeps_tasks_one_and_two(client, alice, worker, llm_stub):
    original = await start(
        client, alice, {"spec": four_tasks(llm_stub.base_url), "inputs": {"topic": "ducks"}}
    )
    first = await wait_for_status(client, alice, original["execution_id"], {"completed"})
    first_result = (
        await client.get(f"{EXECUTIONS}/{original['execution_id']}/result", headers=alice)
    ).json()
    calls_before = len(llm_stub.requests_for("writer"))
    assert calls_before == 4

    response = await client.post(
        f"{EXECUTIONS}/{original['execution_id']}/replay",
        json={"from_task": "t3", "inputs": {"topic": "geese"}},
        headers=alice,
    )
    assert response.status_code == 202, response.text
    replay = response.json()
    assert replay["replay_of"] == original["execution_id"] and replay["replay_from_task"] == "t3"
    assert replay["execution_id"] != original["execution_id"]
    done = await wait_for_status(client, alice, replay["execution_id"], {"completed", "failed"})
    assert done["status"] == "completed", done

    # The stub log: tasks 3 and 4 only, with the new input; nothing for tasks 1 and 2.
    new_calls = llm_stub.requests_for("writer")[calls_before:]
    assert len(new_calls) == 2
    assert "Task number 3 on geese" in new_calls[0].prompt
    assert "Task number 4 on geese" in new_calls[1].prompt
    assert not any("Task number 1" in c.prompt or "Task number 2" in c.prompt for c in new_calls)

    # Both executions readable; tasks 1-2 marked reused, outputs kept verbatim.
    assert [t["reused_from"] for t in done["tasks"]] == [original["execution_id"]] * 2 + [None] * 2
    assert done["replay_of"] == original["execution_id"] and done["inputs"]["topic"] == "geese"
    assert done["token_usage"]["requests"] == 2
    result = (
        await client.get(f"{EXECUTIONS}/{replay['execution_id']}/result", headers=alice)
    ).json()
    assert [t["raw"] for t in result["tasks"][:2]] == [t["raw"] for t in first_result["tasks"][:2]]
    assert result["tasks"][2]["raw"] != first_result["tasks"][2]["raw"]
    again = (await client.get(f"{EXECUTIONS}/{original['execution_id']}", headers=alice)).json()
    assert again["status"] == "completed" and again["replay_of"] is None
    assert again["event_count"] == first["event_count"]
    trace = (await client.get(f"/api/v1/traces/{replay['execution_id']}", headers=alice)).json()
    kinds = [(e["event"], e["task"]) for e in trace["events"]]
    assert kinds[:3] == [
        ("execution_started", None),
        ("task_reused", "t1"),
        ("task_reused", "t2"),
    ]
    assert trace["events"][0]["data"]["replay_of"] == original["execution_id"]
    assert ("task_started", "t1") not in kinds and ("task_started", "t3") in kinds

    # A task before from_task that never finished cannot be kept: 409, nothing started.
    unknown = await client.post(
        f"{EXECUTIONS}/{original['execution_id']}/replay",
        json={"from_task": "nope"},
        headers=alice,
    )
    assert unknown.status_code == 422, unknown.text


def scheduled_activities(history) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


async def test_replay_of_async_and_hierarchical_crews_runs_no_activity_for_kept_tasks(
    temporal_client, task_queue, worker
):
    async_crew = crew(
        [
            {"name": "a", "description": "Part A", "async_execution": True},
            {"name": "b", "description": "Part B", "async_execution": True, "context": []},
            {"name": "join", "description": "Join", "context": ["a", "b"]},
            {"name": "polish", "description": "Polish {tone}"},
        ],
        agents=[offline_agent()],
        inputs={"tone": "dry"},
    )
    hierarchical = crew(
        [{"name": "plan", "description": "Plan"}, {"name": "memo", "description": "A memo"}],
        agents=[offline_agent()],
        process="hierarchical",
        manager_llm={
            "model": "offline/manager",
            "options": {
                "script": [
                    {"delegate": "analyst", "task": "Find facts"},
                    {"final": "the plan"},
                    {"delegate": "analyst", "task": "Write"},
                    {"final": "the memo"},
                    {"delegate": "analyst", "task": "Write again"},
                    {"final": "the second memo"},
                ]
            },
        },
    )
    for spec, from_task, kept in (
        (async_crew, "join", ["a", "b"]),
        (hierarchical, "memo", ["plan"]),
    ):
        original = await start_execution(temporal_client, spec, task_queue=task_queue)
        first = await original.result()
        source = await source_from_temporal(temporal_client, original.id)
        handle = await start_replay(
            temporal_client, source, from_task, {"tone": "warm"}, task_queue=task_queue
        )
        result = await handle.result()
        assert [t.raw for t in result.tasks[: len(kept)]] == [
            t.raw for t in first.tasks[: len(kept)]
        ]
        status = await handle.status()
        assert [t.reused_from for t in status.tasks if t.name in kept] == [original.id] * len(kept)
        history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
        ran = scheduled_activities(history)
        assert not any(a.split(".")[0].split("#")[0] in kept for a in ran), ran
        assert any(a.startswith(from_task) for a in ran)
        if spec.process == "sequential":
            assert "Polish warm" in result.tasks[-1].raw and "dry" in first.tasks[-1].raw
