"""Executions through the API on a real Temporal server and an in-process worker."""

from __future__ import annotations

import asyncio

import pytest

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from tests.api.test_auth import assert_error
from tests.fixtures.api import (
    api_settings_for,
    asgi_client,
    login,
    offline_spec,
    running_app,
    wait_for_status,
)

EXECUTIONS = "/api/v1/executions"


async def start(client, headers, body, key=None):
    if key:
        headers = {**headers, "Idempotency-Key": key}
    response = await client.post(EXECUTIONS, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


async def test_run_to_completion_then_answered_from_the_database(client, alice, worker):
    started = await start(
        client, alice, {"spec": offline_spec(placeholder=True), "inputs": {"topic": "ducks"}}
    )
    execution_id = started["execution_id"]
    assert started["workflow_id"] == f"kasal-exec-{execution_id}"
    assert started["status"] == "pending" and len(execution_id) == 32
    done = await wait_for_status(client, alice, execution_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert [t["state"] for t in done["tasks"]] == ["completed", "completed"]
    assert done["token_usage"]["requests"] == 2 and done["inputs"] == {"topic": "ducks"}
    assert done["event_count"] == 8 and done["ended_at"] >= done["started_at"]

    result = (await client.get(f"{EXECUTIONS}/{execution_id}/result", headers=alice)).json()
    assert result["status"] == "completed" and "Step 1 about ducks" in result["output"]
    assert [t["name"] for t in result["tasks"]] == ["step0", "step1"]
    assert result["token_usage"] == done["token_usage"]

    trace = (await client.get(f"/api/v1/traces/{execution_id}", headers=alice)).json()
    assert trace["finished"] is True and trace["next_offset"] == 8
    assert [e["offset"] for e in trace["events"]] == list(range(8))
    assert [e["type"] for e in trace["events"]] == [
        "execution_started",
        "task_start",
        "llm_call",
        "task_complete",
        "task_start",
        "llm_call",
        "task_complete",
        "execution_complete",
    ]
    page = (
        await client.get(
            f"/api/v1/traces/{execution_id}", params={"offset": 3, "limit": 2}, headers=alice
        )
    ).json()
    assert [e["offset"] for e in page["events"]] == [3, 4] and page["next_offset"] == 5


async def test_status_is_live_while_running(client, alice, worker):
    started = await start(client, alice, {"spec": offline_spec(tasks=2, latency_ms=400)})
    running = await wait_for_status(client, alice, started["execution_id"], {"running"})
    assert running["tasks"][0]["state"] in ("running", "completed")
    assert running["started_at"] is not None and running["ended_at"] is None
    assert_error(
        await client.get(f"{EXECUTIONS}/{started['execution_id']}/result", headers=alice),
        409,
        "conflict",
    )
    live = (await client.get(f"/api/v1/traces/{started['execution_id']}", headers=alice)).json()
    assert live["finished"] is False and live["events"][0]["type"] == "execution_started"
    listed = (await client.get(EXECUTIONS, params={"status": "running"}, headers=alice)).json()
    assert [e["id"] for e in listed["items"]] == [started["execution_id"]]
    await wait_for_status(client, alice, started["execution_id"], {"completed"})


async def test_start_from_a_stored_crew_and_filter_the_list(client, alice, worker):
    crew = (await client.post("/api/v1/crews", json=offline_spec("stored"), headers=alice)).json()
    first = await start(client, alice, {"crew_id": crew["id"]})
    other = await start(client, alice, {"spec": offline_spec("inline")})
    assert first["crew_id"] == crew["id"] and other["crew_id"] is None
    for item in (first, other):
        await wait_for_status(client, alice, item["execution_id"], {"completed"})
    by_crew = (await client.get(EXECUTIONS, params={"crew_id": crew["id"]}, headers=alice)).json()
    assert [e["id"] for e in by_crew["items"]] == [first["execution_id"]]
    assert by_crew["items"][0]["crew_name"] == "stored"
    everything = (await client.get(EXECUTIONS, params={"limit": 1}, headers=alice)).json()
    assert everything["total"] == 2 and everything["items"][0]["id"] == other["execution_id"]
    done = (await client.get(EXECUTIONS, params={"status": "completed"}, headers=alice)).json()
    assert done["total"] == 2
    assert_error(
        await client.get(EXECUTIONS, params={"status": "nope"}, headers=alice),
        422,
        "validation_error",
    )


async def test_idempotency_key_returns_the_same_execution(client, alice, bob, worker):
    body = {"spec": offline_spec("once"), "inputs": {"n": 1}}
    key = {"Idempotency-Key": "order-42"}
    first = await start(client, alice, body, "order-42")
    again = await start(client, alice, body, "order-42")
    assert again["execution_id"] == first["execution_id"]
    racing = await asyncio.gather(
        *(
            client.post(EXECUTIONS, json=body, headers={**alice, "Idempotency-Key": "race"})
            for _ in range(5)
        )
    )
    assert {r.status_code for r in racing} == {202}
    assert len({r.json()["execution_id"] for r in racing}) == 1
    different = await client.post(
        EXECUTIONS, json={**body, "inputs": {"n": 2}}, headers={**alice, **key}
    )
    assert_error(different, 409, "conflict")
    bobs = await start(client, bob, body, "order-42")  # keys are per user
    assert bobs["execution_id"] != first["execution_id"]
    listed = (await client.get(EXECUTIONS, headers=alice)).json()
    assert listed["total"] == 2


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({}, 422, "validation_error"),
        ({"crew_id": "0" * 32, "spec": {"name": "x"}}, 422, "validation_error"),
        ({"crew_id": "not-an-id"}, 422, "validation_error"),
        ({"crew_id": "0" * 32}, 404, "not_found"),
        ({"spec": {"name": "x"}}, 422, "invalid_spec"),
        ({"spec": offline_spec(placeholder=True)}, 422, "invalid_spec"),
        ({"spec": offline_spec(), "inputs": "not a mapping"}, 422, "validation_error"),
        ({"spec": offline_spec(), "priority": 1}, 422, "validation_error"),
    ],
)
async def test_bad_starts_write_nothing(client, alice, body, status, code):
    response = await client.post(EXECUTIONS, json=body, headers=alice)
    error = assert_error(response, status, code)
    if code == "invalid_spec" and body["spec"].get("tasks"):
        assert "topic" in error["message"]
    assert (await client.get(EXECUTIONS, headers=alice)).json()["total"] == 0


async def test_another_users_execution_is_not_found(client, alice, bob, worker):
    started = await start(client, alice, {"spec": offline_spec()})
    execution_id = started["execution_id"]
    await wait_for_status(client, alice, execution_id, {"completed"})
    for method, path, body in [
        ("GET", f"{EXECUTIONS}/{execution_id}", None),
        ("GET", f"{EXECUTIONS}/{execution_id}/result", None),
        ("POST", f"{EXECUTIONS}/{execution_id}/cancel", None),
        ("POST", f"{EXECUTIONS}/{execution_id}/feedback", {"approve": True}),
        ("GET", f"/api/v1/traces/{execution_id}", None),
    ]:
        response = await client.request(method, path, json=body, headers=bob)
        assert_error(response, 404, "not_found")
    assert (await client.get(EXECUTIONS, headers=bob)).json()["total"] == 0
    assert_error(await client.get(f"{EXECUTIONS}/{'f' * 32}", headers=alice), 404, "not_found")
    assert_error(await client.get(f"{EXECUTIONS}/nope", headers=alice), 422, "validation_error")


async def test_a_start_that_died_before_its_workflow_is_started_by_the_retry(
    app, client, alice, worker
):
    """The API crashed between writing the row and starting the workflow: a retry with the
    same Idempotency-Key must not return a pending execution that never runs."""
    from kasal.db.models import Execution
    from kasal.db.repositories import ExecutionRepository
    from kasal.spec import CrewSpec

    body = {"spec": offline_spec("crashed")}
    first = await start(client, alice, body, "crash-1")
    execution_id = first["execution_id"]
    await wait_for_status(client, alice, execution_id, {"completed"})
    # Make a twin row as the crashed process left it: committed, pending, no workflow.
    async with app.state.kasal.sessions() as session, session.begin():
        row = await session.get(Execution, execution_id)
        orphan = Execution(
            id="0" * 31 + "1",
            workflow_id="kasal-exec-" + "0" * 31 + "1",
            owner_id=row.owner_id,
            crew_name=row.crew_name,
            status="pending",
            spec=CrewSpec.from_data(body["spec"]).model_dump(mode="json"),
            inputs={},
            idempotency_key="crash-2",
            request_hash=row.request_hash,
        )
        await ExecutionRepository(session).create(orphan)
    retried = await start(client, alice, body, "crash-2")
    assert retried["execution_id"] == orphan.id
    done = await wait_for_status(client, alice, orphan.id, {"completed"}, timeout=30)
    assert done["status"] == "completed"


async def test_cancel_is_idempotent(client, alice, worker):
    spec = offline_spec(tasks=2, latency_ms=30_000)
    # A short heartbeat so the running task hears of the cancel within about two seconds.
    spec["timeout"] = {"heartbeat": 2, "start_to_close": 120}
    started = await start(client, alice, {"spec": spec})
    execution_id = started["execution_id"]
    await wait_for_status(client, alice, execution_id, {"running"})
    for _ in range(2):
        response = await client.post(f"{EXECUTIONS}/{execution_id}/cancel", headers=alice)
        assert response.status_code == 202
        assert response.json()["cancel_requested"] is True
    done = await wait_for_status(client, alice, execution_id, {"cancelled"}, timeout=20)
    assert done["tasks"][0]["state"] == "cancelled"
    again = (await client.post(f"{EXECUTIONS}/{execution_id}/cancel", headers=alice)).json()
    assert again == {"execution_id": execution_id, "status": "cancelled", "cancel_requested": False}
    result = (await client.get(f"{EXECUTIONS}/{execution_id}/result", headers=alice)).json()
    assert result["status"] == "cancelled" and result["output"] is None


async def test_human_feedback(client, alice, worker):
    started = await start(client, alice, {"spec": offline_spec(tasks=1, human_input=True)})
    execution_id = started["execution_id"]
    path = f"{EXECUTIONS}/{execution_id}/feedback"
    for bad in (
        {},
        {"approve": "yes"},
        {"approve": False},
        {"feedback": "   "},
        {"approve": True, "feedback": "both"},
        {"approve": True, "extra": 1},
    ):
        assert_error(await client.post(path, json=bad, headers=alice), 422, "validation_error")
    waiting = await wait_for_status(client, alice, execution_id, {"waiting_for_input"})
    assert waiting["tasks"][0]["state"] == "waiting_for_input"
    redo = await client.post(path, json={"feedback": "shorter, please"}, headers=alice)
    assert redo.status_code == 200, redo.text
    assert redo.json() == {
        "execution_id": execution_id,
        "task": "step0",
        "approved": False,
        "rerun": True,
    }
    # Waiting again means waiting after the rerun: more events than the first wait had
    # (a status read within the status cache's lifetime still shows the first wait).
    await wait_for_status(
        client,
        alice,
        execution_id,
        {"waiting_for_input"},
        until=lambda body: body["event_count"] > waiting["event_count"],
    )
    wrong_task = await client.post(path, json={"approve": True, "task": "ghost"}, headers=alice)
    assert_error(wrong_task, 409, "conflict")
    approved = await client.post(path, json={"approve": True}, headers=alice)
    assert approved.json()["approved"] is True
    await wait_for_status(client, alice, execution_id, {"completed"})
    late = await client.post(path, json={"approve": True}, headers=alice)
    assert_error(late, 409, "conflict")


async def test_feedback_when_nothing_waits_is_409(client, alice, worker):
    started = await start(client, alice, {"spec": offline_spec(tasks=2, latency_ms=1500)})
    await wait_for_status(client, alice, started["execution_id"], {"running"})
    response = await client.post(
        f"{EXECUTIONS}/{started['execution_id']}/feedback", json={"approve": True}, headers=alice
    )
    error = assert_error(response, 409, "conflict")
    assert "no task is waiting" in error["message"]
    await client.post(f"{EXECUTIONS}/{started['execution_id']}/cancel", headers=alice)


async def test_starting_is_rate_limited(api_settings, worker):
    settings = api_settings_for(api_settings, execution_rate_limit="2/minute")
    async with running_app(settings) as app, asgi_client(app) as client:
        alice = await login(
            client, settings.admin_email, settings.admin_password.get_secret_value()
        )
        body = {"spec": offline_spec()}
        for _ in range(2):
            assert (await client.post(EXECUTIONS, json=body, headers=alice)).status_code == 202
        limited = await client.post(EXECUTIONS, json=body, headers=alice)
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        assert (await client.get(EXECUTIONS, headers=alice)).json()["total"] == 2


async def test_without_temporal_starts_are_503_and_nothing_is_written(api_settings):
    from kasal.client import free_port

    settings = api_settings_for(api_settings, temporal_address=f"127.0.0.1:{free_port()}")
    async with running_app(settings) as app, asgi_client(app) as client:
        alice = await login(
            client, settings.admin_email, settings.admin_password.get_secret_value()
        )
        response = await client.post(EXECUTIONS, json={"spec": offline_spec()}, headers=alice)
        assert_error(response, 503, "temporal_unavailable")
        assert (await client.get(EXECUTIONS, headers=alice)).json()["total"] == 0
        ready = await client.get("/readyz")
        error = assert_error(ready, 503, "not_ready")
        assert error["details"]["database"] == "ok"
        assert error["details"]["temporal"].startswith("unavailable")
