"""Schedules on Temporal Schedules, on the real dev server: a 1-second interval starts
ordinary executions; pause stops them, trigger starts one now, backfill creates the past
runs, delete ends it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from tests.fixtures.api import offline_spec

SCHEDULES = "/api/v1/schedules"
EXECUTIONS = "/api/v1/executions"


async def runs_of(client, headers, schedule_id):
    response = await client.get(
        EXECUTIONS, params={"schedule_id": schedule_id, "limit": 100}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def eventually(probe, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def total_runs(client, headers, schedule_id) -> int:
    body = (await client.get(f"{SCHEDULES}/{schedule_id}", headers=headers)).json()
    return body["total_runs"]


async def test_a_one_second_schedule_runs_pauses_triggers_backfills_and_ends(
    client, alice, bob, worker, temporal_client: Client
):
    created = await client.post(
        SCHEDULES,
        json={
            "spec": offline_spec("nightly-report", tasks=1),
            "timetable": {"interval_seconds": [1], "overlap": "allow_all"},
        },
        headers=alice,
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    schedule_id = schedule["id"]
    assert schedule["timetable"]["interval_seconds"] == [1.0]
    assert schedule["paused"] is False and schedule["next_runs"]

    # Runs start every second, each an ordinary execution of alice's, linked to the schedule.
    async def two_done():
        runs = await runs_of(client, alice, schedule_id)
        return [r for r in runs if r["status"] == "completed"][:2] or None

    done = await eventually(two_done)
    assert len(done) >= 1
    run = done[0]
    assert run["crew_name"] == "nightly-report" and run["schedule_id"] == schedule_id
    description = await temporal_client.get_workflow_handle(run["workflow_id"]).describe()
    assert description.search_attributes.get("KasalOwner")  # owned in the Web UI too
    assert await runs_of(client, bob, schedule_id) == []  # nobody else sees them
    assert (await client.get(f"{SCHEDULES}/{schedule_id}", headers=bob)).status_code == 404

    # Pause: no new run.
    paused = await client.post(f"{SCHEDULES}/{schedule_id}/pause", headers=alice)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    before = await total_runs(client, alice, schedule_id)
    await asyncio.sleep(2.5)
    assert await total_runs(client, alice, schedule_id) == before

    # Trigger: one run now, even paused.
    assert (
        await client.post(f"{SCHEDULES}/{schedule_id}/trigger", headers=alice)
    ).status_code == 202
    await eventually(lambda: _more(client, alice, schedule_id, before))
    after_trigger = await total_runs(client, alice, schedule_id)
    assert after_trigger == before + 1

    # Backfill three past seconds: three runs, for times long gone.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    backfill = await client.post(
        f"{SCHEDULES}/{schedule_id}/backfill",
        json={"start_at": start.isoformat(), "end_at": (start + timedelta(seconds=2)).isoformat()},
        headers=alice,
    )
    assert backfill.status_code == 202, backfill.text
    await eventually(lambda: _more(client, alice, schedule_id, after_trigger + 1))
    await asyncio.sleep(0.5)  # a fourth would have come with the others
    backfilled = await total_runs(client, alice, schedule_id) - after_trigger
    assert backfilled == 3, backfilled  # 0 s, 1 s and 2 s into the range (both ends in)
    details = (await client.get(f"{SCHEDULES}/{schedule_id}", headers=alice)).json()
    scheduled = sorted(r["scheduled_at"] for r in details["recent_runs"])
    assert any(s.startswith(start.strftime("%Y-%m-%dT%H")) for s in scheduled), scheduled
    assert details["recent_executions"]

    # Every run becomes a recorded execution of the schedule.
    async def all_recorded():
        runs = await runs_of(client, alice, schedule_id)
        total = await total_runs(client, alice, schedule_id)
        return len(runs) == total and all(r["status"] == "completed" for r in runs)

    await eventually(all_recorded)

    # Delete: the Temporal schedule is gone, the executions stay.
    assert (await client.delete(f"{SCHEDULES}/{schedule_id}", headers=alice)).status_code == 204
    assert (await client.get(f"{SCHEDULES}/{schedule_id}", headers=alice)).status_code == 404
    with pytest.raises(RPCError, match="not found"):
        await temporal_client.get_schedule_handle(f"kasal-sched-{schedule_id}").describe()


async def _more(client, headers, schedule_id, than: int) -> bool:
    return await total_runs(client, headers, schedule_id) > than


async def test_a_timetable_needs_a_time_and_a_runnable_crew(client, alice, worker):
    no_time = await client.post(
        SCHEDULES, json={"spec": offline_spec(), "timetable": {}}, headers=alice
    )
    assert no_time.status_code == 422
    missing_input = await client.post(
        SCHEDULES,
        json={"spec": offline_spec(placeholder=True), "timetable": {"cron": ["0 * * * *"]}},
        headers=alice,
    )
    assert missing_input.status_code == 422, missing_input.text
    assert (await client.get(SCHEDULES, headers=alice)).json()["total"] == 0
