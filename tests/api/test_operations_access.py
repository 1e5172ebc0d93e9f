"""Issue 9's operations under issue 10's groups: another group's user gets 404 on the SSE
stream, results, stop, force-stop, replay, deletion, schedules, webhooks and the inbox (as
if nothing existed, through a token or an API key); inside the group a viewer reads but
cannot stop or answer, an operator stops, answers and triggers, only an editor manages
schedules and webhooks. Real API, real Temporal and worker."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from kasal.db.models import AuditEvent
from tests.api.test_auth import assert_error
from tests.fixtures.api import api_settings_for, new_user, offline_spec, wait_for_status

pytestmark = pytest.mark.timeout(120)

EXECUTIONS = "/api/v1/executions"
SCHEDULES = "/api/v1/schedules"
WEBHOOKS = "/api/v1/webhooks"
#: A timetable that never runs by itself during a test.
HOURLY_PAUSED = {"interval_seconds": [3600], "paused": True}


@pytest.fixture
def api_settings(settings):
    # Webhooks to a local receiver are refused unless the operator allows them.
    return api_settings_for(settings, webhook_allow_private=True)


async def make_key(client, headers, scopes) -> dict[str, str]:
    made = await client.post("/api/v1/keys", json={"name": "t", "scopes": scopes}, headers=headers)
    assert made.status_code == 201, made.text
    return {"X-API-Key": made.json()["key"]}


async def user_id(client, headers) -> str:
    return (await client.get("/api/v1/auth/me", headers=headers)).json()["id"]


async def eventually(probe, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_another_groups_user_gets_404_on_every_operations_route(
    app, client, alice, bob, worker
):
    started = await client.post(EXECUTIONS, json={"spec": offline_spec("ops")}, headers=alice)
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    await wait_for_status(client, alice, execution_id, {"completed"})
    schedule = await client.post(
        SCHEDULES,
        json={"spec": offline_spec("nightly", tasks=1), "timetable": HOURLY_PAUSED},
        headers=alice,
    )
    assert schedule.status_code == 201, schedule.text
    schedule_id = schedule.json()["id"]
    webhook = await client.post(
        WEBHOOKS,
        json={"url": "http://127.0.0.1:9/hook", "events": ["execution_completed"]},
        headers=alice,
    )
    assert webhook.status_code == 201, webhook.text
    webhook_id = webhook.json()["id"]

    routes = [
        ("GET", f"{EXECUTIONS}/{execution_id}/events", None),
        ("GET", f"{EXECUTIONS}/{execution_id}/result?wait=1", None),
        ("POST", f"{EXECUTIONS}/{execution_id}/stop", None),
        ("POST", f"{EXECUTIONS}/{execution_id}/force-stop", None),
        ("POST", f"{EXECUTIONS}/{execution_id}/replay", {"from_task": "step1"}),
        ("DELETE", f"{EXECUTIONS}/{execution_id}", None),
        ("POST", f"/api/v1/inbox/{execution_id}:step1", {"approve": True}),
        ("GET", f"{SCHEDULES}/{schedule_id}", None),
        ("PUT", f"{SCHEDULES}/{schedule_id}", {"name": "mine now"}),
        ("POST", f"{SCHEDULES}/{schedule_id}/pause", None),
        ("POST", f"{SCHEDULES}/{schedule_id}/unpause", None),
        ("POST", f"{SCHEDULES}/{schedule_id}/trigger", None),
        (
            "POST",
            f"{SCHEDULES}/{schedule_id}/backfill",
            {"start_at": "2026-01-01T00:00:00Z", "end_at": "2026-01-01T03:00:00Z"},
        ),
        ("DELETE", f"{SCHEDULES}/{schedule_id}", None),
        ("GET", f"{WEBHOOKS}/{webhook_id}", None),
        ("GET", f"{WEBHOOKS}/{webhook_id}/deliveries", None),
        ("DELETE", f"{WEBHOOKS}/{webhook_id}", None),
        # Nor can another group's subscription listen to this schedule.
        (
            "POST",
            WEBHOOKS,
            {
                "url": "http://127.0.0.1:9/x",
                "events": ["task_completed"],
                "schedule_id": schedule_id,
            },
        ),
    ]
    bob_key = await make_key(client, bob, ["run"])
    for headers in (bob, bob_key):
        for method, path, body in routes:
            answer = await client.request(method, path, json=body, headers=headers)
            assert_error(answer, 404, "not_found")
        # Lists and counts hold none of it.
        assert (await client.get(SCHEDULES, headers=headers)).json()["total"] == 0
        assert (await client.get(WEBHOOKS, headers=headers)).json()["total"] == 0
        assert (await client.get("/api/v1/inbox", headers=headers)).json() == []
        counts = await client.get(f"{EXECUTIONS}/counts", headers=headers)
        assert counts.status_code == 200 and counts.json()["total"] == 0
    # Everything still stands for its group.
    assert (await client.get(f"{SCHEDULES}/{schedule_id}", headers=alice)).status_code == 200
    assert (await client.get(f"{WEBHOOKS}/{webhook_id}", headers=alice)).status_code == 200
    assert (await client.get(f"{EXECUTIONS}/counts", headers=alice)).json()["total"] == 1
    # The refused mutations are in the audit log, under their action names.
    bob_id = await user_id(client, bob)
    async with app.state.kasal.sessions() as session:
        refused = (
            await session.scalars(select(AuditEvent).where(AuditEvent.actor_user_id == bob_id))
        ).all()
    actions = {(e.action, e.status_code) for e in refused}
    for action in ("execution.stop", "execution.force_stop", "schedule.delete", "webhook.delete"):
        assert (action, 404) in actions, actions


async def test_a_viewer_reads_but_cannot_stop_or_answer_an_operator_can(
    app, client, admin, alice, worker
):
    viewer, operator = await new_user(client, admin), await new_user(client, admin)
    group_id = (await client.get("/api/v1/groups", headers=alice)).json()[0]["id"]
    for headers, role in ((viewer, "viewer"), (operator, "operator")):
        added = await client.put(
            f"/api/v1/groups/{group_id}/members",
            json={"user_id": await user_id(client, headers), "role": role},
            headers=alice,
        )
        assert added.status_code == 200, added.text

    started = await client.post(
        EXECUTIONS, json={"spec": offline_spec("review", human_input=True)}, headers=alice
    )
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    await wait_for_status(client, viewer, execution_id, {"waiting_for_input"})
    item_id = f"{execution_id}:step1"

    # The viewer reads and does nothing else.
    read_key = await make_key(client, alice, ["read"])
    for headers in (viewer, read_key):  # a read key of the group's admin is a viewer too
        for method, path, body in [
            ("POST", f"{EXECUTIONS}/{execution_id}/stop", None),
            ("POST", f"{EXECUTIONS}/{execution_id}/force-stop", None),
            ("POST", f"{EXECUTIONS}/{execution_id}/cancel", None),
            ("POST", f"{EXECUTIONS}/{execution_id}/feedback", {"approve": True}),
            ("POST", f"/api/v1/inbox/{item_id}", {"approve": True}),
        ]:
            answer = await client.request(method, path, json=body, headers=headers)
            assert_error(answer, 403, "forbidden")
    assert (await client.get("/api/v1/inbox", headers=viewer)).json() == []

    # The operator sees the waiting task in their inbox and answers it.
    async def listed():
        items = (await client.get("/api/v1/inbox", headers=operator)).json()
        return [i for i in items if i["id"] == item_id]

    assert (await eventually(listed))[0]["execution_id"] == execution_id
    answered = await client.post(
        f"/api/v1/inbox/{item_id}", json={"approve": True}, headers=operator
    )
    assert answered.status_code == 200, answered.text
    await wait_for_status(client, operator, execution_id, {"completed"})
    # The viewer reads its events too (over ASGI a stream is read whole: once it ended).
    events = await client.get(f"{EXECUTIONS}/{execution_id}/events", headers=viewer)
    assert events.status_code == 200 and "event: stream_end" in events.text
    stopped = await client.post(f"{EXECUTIONS}/{execution_id}/stop", headers=operator)
    assert stopped.status_code == 202 and stopped.json()["status"] == "completed"
    # Deleting history is an editor's.
    deleted = await client.delete(f"{EXECUTIONS}/{execution_id}", headers=operator)
    assert_error(deleted, 403, "forbidden")

    # Schedules: the viewer reads, the operator triggers, only editors manage.
    schedule = await client.post(
        SCHEDULES,
        json={"spec": offline_spec("daily", tasks=1), "timetable": HOURLY_PAUSED},
        headers=alice,
    )
    assert schedule.status_code == 201, schedule.text
    schedule_id = schedule.json()["id"]
    assert (await client.get(f"{SCHEDULES}/{schedule_id}", headers=viewer)).status_code == 200
    assert_error(
        await client.post(f"{SCHEDULES}/{schedule_id}/trigger", headers=viewer), 403, "forbidden"
    )
    for path in ("pause", "unpause"):
        answer = await client.post(f"{SCHEDULES}/{schedule_id}/{path}", headers=operator)
        assert_error(answer, 403, "forbidden")
    assert_error(
        await client.post(
            SCHEDULES,
            json={"spec": offline_spec("mine", tasks=1), "timetable": HOURLY_PAUSED},
            headers={**operator, "X-Kasal-Group": group_id},
        ),
        403,
        "forbidden",
    )
    assert_error(
        await client.post(
            WEBHOOKS,
            json={
                "url": "http://127.0.0.1:9/h",
                "events": ["task_completed"],
                "schedule_id": schedule_id,
            },
            headers=operator,
        ),
        403,
        "forbidden",
    )
    triggered = await client.post(f"{SCHEDULES}/{schedule_id}/trigger", headers=operator)
    assert triggered.status_code == 202, triggered.text

    # The run belongs to the schedule's group: the viewer sees it.
    async def run_of_schedule():
        page = await client.get(EXECUTIONS, params={"schedule_id": schedule_id}, headers=viewer)
        return page.json()["items"]

    run = (await eventually(run_of_schedule))[0]
    assert run["group_id"] == group_id
