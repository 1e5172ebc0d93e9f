"""Stop, force-stop, executions ended outside Kasal, ?wait=, filters, counts and delete,
on the real dev server with a real worker."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import datetime

import pytest
from temporalio.client import WorkflowExecutionStatus

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from kasal.client import temporal_cli
from kasal.db.models import TraceEvent
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    asgi_client,
    login,
    new_user,
    offline_spec,
    running_app,
    wait_for_status,
)
from tests.fixtures.temporal import running_worker
from tests.helpers import stub_agent

EXECUTIONS = "/api/v1/executions"


@pytest.fixture
async def ops(settings, temporal_client, task_queue):
    """An app that reconciles every 0.3 s and force-stops after 3 s, its client, and alice."""
    api = api_settings_for(settings, reconcile_interval=0.3, force_stop_seconds=3.0)
    async with running_app(api) as app, asgi_client(app) as client:
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        alice = await new_user(client, admin)
        yield app, client, alice


async def start(client, headers, spec, **extra):
    response = await client.post(EXECUTIONS, json={"spec": spec, **extra}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["execution_id"]


async def test_graceful_stop_finishes_the_running_task_and_starts_no_other(ops, worker):
    _app, client, alice = ops
    execution_id = await start(client, alice, offline_spec(tasks=3, latency_ms=600))
    await wait_for_status(
        client,
        alice,
        execution_id,
        {"running"},
        until=lambda b: b["tasks"][0]["state"] == "running",
    )
    stop = await client.post(
        f"{EXECUTIONS}/{execution_id}/stop", json={"reason": "enough"}, headers=alice
    )
    assert stop.status_code == 202, stop.text
    body = stop.json()
    assert body["status"] == "stopping" and body["mode"] == "stop"
    assert body["requested_by"].startswith("user-")

    result = await client.get(
        f"{EXECUTIONS}/{execution_id}/result", params={"wait": 30}, headers=alice
    )
    assert result.status_code == 200, result.text
    assert result.json()["status"] == "stopped"
    assert [t["name"] for t in result.json()["tasks"]] == ["step0"]

    done = (await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice)).json()
    assert done["status"] == "stopped"
    assert [t["state"] for t in done["tasks"]] == ["completed", "cancelled", "cancelled"]
    assert done["tasks"][1]["started_at"] is None and done["tasks"][2]["started_at"] is None
    assert done["stop_mode"] == "stop" and done["stop_requested_by"] == body["requested_by"]
    assert done["stop_requested_at"] is not None
    trace = (await client.get(f"/api/v1/traces/{execution_id}", headers=alice)).json()
    kinds = [(e["event"], e["task"]) for e in trace["events"]]
    assert ("task_started", "step1") not in kinds and ("task_completed", "step0") in kinds
    assert kinds[-1][0] == "execution_stopped"
    stopped = [e for e in trace["events"] if e["event"] == "stop_requested"]
    assert stopped[0]["data"] == {"by": body["requested_by"], "reason": "enough"}


async def test_force_stop_ends_a_task_blocked_in_a_provider_call_within_its_bound(
    ops, worker, llm_stub
):
    from tests.fixtures.llm_stub import ModelBehaviour

    _app, client, alice = ops
    llm_stub.behaviours["slow"] = ModelBehaviour(block_at=1)
    spec = offline_spec(tasks=2)
    spec["agents"] = [stub_agent("analyst", llm_stub.base_url, model="slow") | {"tools": []}]
    execution_id = await start(client, alice, spec)
    assert await asyncio.to_thread(llm_stub.blocked.wait, 60), "the provider call never started"
    began = time.monotonic()
    response = await client.post(f"{EXECUTIONS}/{execution_id}/force-stop", headers=alice)
    took = time.monotonic() - began
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled" and body["terminated"] is False, body
    assert took < 3.0 + 1.0, f"force-stop took {took:.1f} s"
    done = (await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice)).json()
    assert done["status"] == "cancelled" and done["stop_mode"] == "force_stop"
    assert [t["state"] for t in done["tasks"]] == ["cancelled", "cancelled"]


async def test_force_stop_terminates_a_workflow_that_does_not_acknowledge(ops, temporal_client):
    _app, client, alice = ops
    execution_id = await start(client, alice, offline_spec())  # no worker: nobody acknowledges
    began = time.monotonic()
    response = await client.post(f"{EXECUTIONS}/{execution_id}/force-stop", headers=alice)
    took = time.monotonic() - began
    body = response.json()
    assert response.status_code == 200 and body["terminated"] is True, body
    assert body["status"] == "terminated" and 3.0 <= took < 6.0
    done = (await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice)).json()
    assert done["status"] == "terminated" and "force-stopped by" in done["error"]
    assert done["stop_mode"] == "force_stop" and done["ended_at"] is not None
    handle = temporal_client.get_workflow_handle(f"kasal-exec-{execution_id}")
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED


async def test_terminate_and_reset_from_the_temporal_cli_are_reconciled(
    ops, temporal_server, temporal_client, task_queue, settings
):
    app, client, alice = ops
    async with running_worker(temporal_client, task_queue, settings):
        execution_id = await start(client, alice, offline_spec(tasks=3, latency_ms=500))
        await wait_for_status(
            client,
            alice,
            execution_id,
            {"running"},
            until=lambda b: b["tasks"][1]["state"] == "running",
        )
        workflow_id = f"kasal-exec-{execution_id}"
        cli = [temporal_cli(), "workflow"]
        where = ["--workflow-id", workflow_id, "--address", temporal_server.address]
        subprocess.run(
            [*cli, "terminate", *where, "--reason", "ops"], check=True, capture_output=True
        )
        began = time.monotonic()
        done = await wait_for_status(client, alice, execution_id, {"terminated"}, timeout=10)
        assert time.monotonic() - began < 5
        assert [t["state"] for t in done["tasks"]] == ["completed", "cancelled", "cancelled"]
        assert "terminated outside Kasal" in done["error"] and done["ended_at"]
        # The workflow's last events were read back (a worker could replay it).
        assert done["event_count"] >= 5
        trace = (await client.get(f"/api/v1/traces/{execution_id}", headers=alice)).json()
        assert trace["finished"] and len(trace["events"]) == done["event_count"]
        description = await temporal_client.get_workflow_handle(workflow_id).describe()
        assert description.status == WorkflowExecutionStatus.TERMINATED

        # A reset is a new run of the same execution: running again, then its own end.
        subprocess.run(
            [*cli, "reset", *where, "--type", "LastWorkflowTask", "--reason", "again"],
            check=True,
            capture_output=True,
        )
        finished = await wait_for_status(client, alice, execution_id, {"completed"}, timeout=30)
        assert [t["state"] for t in finished["tasks"]] == ["completed"] * 3
    listed = (await client.get(EXECUTIONS, headers=alice)).json()
    assert [e["id"] for e in listed["items"]] == [execution_id]


async def test_wait_answers_the_moment_the_execution_ends(ops, worker):
    _app, client, alice = ops
    execution_id = await start(client, alice, offline_spec(tasks=2, latency_ms=700))
    short = await client.get(
        f"{EXECUTIONS}/{execution_id}/result", params={"wait": 0.3}, headers=alice
    )
    assert short.status_code == 202, short.text
    assert (
        short.json()["status"] in ("pending", "running") and short.json()["waited_seconds"] >= 0.3
    )
    response = await client.get(
        f"{EXECUTIONS}/{execution_id}/result", params={"wait": 60}, headers=alice
    )
    answered = time.time()
    assert response.status_code == 200 and response.json()["status"] == "completed"
    row = (await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice)).json()
    ended = datetime.fromisoformat(row["ended_at"]).timestamp()
    assert answered - ended < 1.0, f"answered {answered - ended:.2f} s after the end"


async def test_filters_counts_and_delete(ops, worker):
    app, client, alice = ops
    sessions = app.state.kasal.sessions
    first = await start(client, alice, offline_spec("alpha-report"))
    second = await start(client, alice, offline_spec("beta-digest", tasks=1))
    for execution_id in (first, second):
        await client.get(f"{EXECUTIONS}/{execution_id}/result", params={"wait": 30}, headers=alice)
    found = (await client.get(EXECUTIONS, params={"q": "ALPHA"}, headers=alice)).json()
    assert [e["id"] for e in found["items"]] == [first]
    none = (
        await client.get(
            EXECUTIONS, params={"created_after": "2100-01-01T00:00:00Z"}, headers=alice
        )
    ).json()
    assert none["total"] == 0
    counts = (await client.get(f"{EXECUTIONS}/counts", headers=alice)).json()
    assert counts == {"counts": {"completed": 2}, "total": 2}
    # Issue 10: owner_id filters by who started them, among the executions of the caller's
    # groups (it was "admins only" when each user saw only their own): another user's id
    # finds nothing of anyone else's, alice's own finds hers.
    other = await client.get(EXECUTIONS, params={"owner_id": "0" * 32}, headers=alice)
    assert other.status_code == 200 and other.json()["total"] == 0
    alice_id = (await client.get("/api/v1/auth/me", headers=alice)).json()["id"]
    mine = await client.get(EXECUTIONS, params={"owner_id": alice_id}, headers=alice)
    assert {e["id"] for e in mine.json()["items"]} == {first, second}

    deleted = await client.delete(f"{EXECUTIONS}/{first}", headers=alice)
    assert deleted.status_code == 204, deleted.text
    assert (await client.get(f"{EXECUTIONS}/{first}", headers=alice)).status_code == 404
    async with sessions() as session:
        from sqlalchemy import func, select

        left = await session.scalar(
            select(func.count()).select_from(TraceEvent).where(TraceEvent.execution_id == first)
        )
    assert left == 0
    counts = (await client.get(f"{EXECUTIONS}/counts", headers=alice)).json()
    assert counts["total"] == 1


async def test_a_fresh_api_process_catches_up_on_executions_ended_while_none_ran(
    settings, temporal_client
):
    from datetime import timedelta

    from kasal.reconcile import Reconciler

    api = api_settings_for(settings, reconcile_interval=3600)  # its own loop stays out
    async with running_app(api) as app, asgi_client(app) as client:
        alice = await new_user(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        execution_id = await start(client, alice, offline_spec())  # no worker: stays open
        await temporal_client.get_workflow_handle(f"kasal-exec-{execution_id}").terminate()
        state = app.state.kasal
        # A look-back that finds nothing: only the first pass's look at open rows can.
        fresh = Reconciler(state.temporal, state.sessions, lookback=timedelta(days=-1))
        assert await fresh.run_once() == [execution_id]
        assert await fresh.run_once() == []
        row = (await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice)).json()
        assert row["status"] == "terminated" and "outside Kasal" in row["error"]
