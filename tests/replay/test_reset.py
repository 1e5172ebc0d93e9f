"""A reset done with the real Temporal CLI is the same execution, and its trace says so."""

from __future__ import annotations

import asyncio
import subprocess

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from kasal.client import temporal_cli
from tests.api.test_executions import start
from tests.fixtures.api import offline_spec, wait_for_status

EXECUTIONS = "/api/v1/executions"


def event_after_task(history, task: str) -> int:
    """The WorkflowTaskCompleted right after ``task``'s activity completed."""
    scheduled = {}
    done = None
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_id
        attrs = event.activity_task_completed_event_attributes
        if event.HasField("activity_task_completed_event_attributes") and (
            scheduled[attrs.scheduled_event_id] == task
        ):
            done = event.event_id
        if done and event.HasField("workflow_task_completed_event_attributes"):
            return event.event_id
    raise AssertionError(f"no completion of {task}")


async def test_cli_reset_after_task_two_is_the_same_execution_marked_in_its_trace(
    client, alice, worker, temporal_server, temporal_client
):
    started = await start(client, alice, {"spec": offline_spec(tasks=4)})
    execution_id = started["execution_id"]
    first = await wait_for_status(client, alice, execution_id, {"completed"})
    old_trace = (await client.get(f"/api/v1/traces/{execution_id}", headers=alice)).json()
    handle = temporal_client.get_workflow_handle(started["workflow_id"])
    history = await handle.fetch_history()
    base_run = (await handle.describe()).run_id
    reset_at = event_after_task(history, "step1")

    command = [
        temporal_cli(),
        "workflow",
        "reset",
        "--address",
        temporal_server.address,
        "--workflow-id",
        started["workflow_id"],
        "--event-id",
        str(reset_at),
        "--reason",
        "redo from step2",
    ]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    # The new run records into the same row: wait until its trace carries the marker.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        trace = (
            await client.get(
                f"/api/v1/traces/{execution_id}", params={"limit": 1000}, headers=alice
            )
        ).json()
        markers = [e for e in trace["events"] if e["event"] == "execution_reset"]
        if markers and markers[0]["data"].get("base_run_id"):
            break
        assert asyncio.get_running_loop().time() < deadline, trace
        await asyncio.sleep(0.2)
    marker = markers[0]
    new_run = (await handle.describe()).run_id
    assert new_run != base_run
    assert marker["data"]["base_run_id"] == base_run and marker["data"]["run_id"] == new_run
    assert marker["data"]["reason"].endswith("redo from step2")
    assert marker["data"]["reset_event_id"] > reset_at - 1 and marker["history_event_id"]

    # Before the marker both runs share one history: the same events, tasks 1-2 not re-run.
    before = trace["events"][: marker["offset"]]

    def same(events):
        return [(e["event"], e["task"], e["offset"]) for e in events]

    assert same(before) == same(old_trace["events"][: marker["offset"]])
    # Each links to where it happened: the same history event, except what the workflow
    # task the reset re-ran appended (step1's result and its events), now linked later.
    rerun_task = reset_at - 1  # the WorkflowTaskStarted of the task completed at reset_at
    for old, new in zip(old_trace["events"][: marker["offset"]], before, strict=True):
        if old["history_event_id"] < rerun_task:
            assert new["history_event_id"] == old["history_event_id"], new
        else:
            assert new["history_event_id"] > reset_at, new
    assert {e["task"] for e in before if e["event"] == "task_started"} == {"step0", "step1"}
    after = trace["events"][marker["offset"] + 1 :]
    assert [e["task"] for e in after if e["event"] == "task_started"] == ["step2", "step3"]
    # The superseded events of the earlier run are kept in the marker, in order.
    superseded = marker["data"]["superseded"]
    assert marker["data"]["superseded_count"] == len(superseded) > 0
    assert [e["offset"] for e in superseded] == list(
        range(marker["offset"], old_trace["next_offset"])
    )
    assert superseded[-1]["type"] == "execution_completed"
    assert [e["task"] for e in superseded if e["type"] == "task_started"] == ["step2", "step3"]
    assert marker["data"]["replaced_record"]["status"] == "completed"
    assert marker["data"]["replaced_record"]["event_count"] == first["event_count"]

    # Same row, the new run's result; every trace event links into the Temporal history.
    row = await wait_for_status(client, alice, execution_id, {"completed"})
    assert row["id"] == execution_id and [t["state"] for t in row["tasks"]] == ["completed"] * 4
    result = (await client.get(f"{EXECUTIONS}/{execution_id}/result", headers=alice)).json()
    assert result["status"] == "completed" and "Step 3" in result["output"]
    assert all(e["history_event_id"] for e in trace["events"])
    # No activity of tasks 1-2 ran in the new run.
    new_history = await handle.fetch_history()
    rerun = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in new_history.events
        if e.event_id > reset_at and e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert rerun[:2] == ["step2", "step3"] and "step0" not in rerun and "step1" not in rerun
