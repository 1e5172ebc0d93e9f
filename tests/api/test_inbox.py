"""The human-input inbox across a user's executions: list, answer by id."""

from __future__ import annotations

import asyncio

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from tests.fixtures.api import offline_spec

INBOX = "/api/v1/inbox"
EXECUTIONS = "/api/v1/executions"


async def inbox_until(client, headers, predicate, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(INBOX, headers=headers)
        assert response.status_code == 200, response.text
        items = response.json()
        if predicate(items):
            return items
        assert asyncio.get_running_loop().time() < deadline, items
        await asyncio.sleep(0.1)


async def start(client, headers, spec):
    response = await client.post(EXECUTIONS, json={"spec": spec}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["execution_id"]


async def test_the_inbox_lists_every_waiting_task_and_answers_by_id(client, alice, bob, worker):
    review = offline_spec("review-crew", tasks=2, human_input=True)
    review["tasks"][1]["human_input_timeout"] = 600
    first = await start(client, alice, review)
    second = await start(client, alice, offline_spec("other-crew", tasks=1, human_input=True))
    theirs = await start(client, bob, offline_spec("bobs-crew", tasks=1, human_input=True))

    items = await inbox_until(client, alice, lambda items: len(items) == 2)
    by_execution = {i["execution_id"]: i for i in items}
    assert set(by_execution) == {first, second}
    waiting = by_execution[first]
    assert waiting["id"] == f"{first}:step1" and waiting["task"] == "step1"
    assert waiting["crew_name"] == "review-crew" and waiting["agent"] == "analyst"
    assert waiting["output"]
    assert waiting["timeout_seconds"] == 600 and waiting["expires_at"] > waiting["since"]
    assert by_execution[second]["timeout_seconds"] is None

    bobs = await inbox_until(client, bob, lambda items: len(items) == 1)
    assert bobs[0]["execution_id"] == theirs
    # Nobody answers another's task.
    assert (
        await client.post(f"{INBOX}/{bobs[0]['id']}", json={"approve": True}, headers=alice)
    ).status_code == 404

    # Feedback: the task runs again with it and waits again, with the new output.
    redo = await client.post(
        f"{INBOX}/{waiting['id']}", json={"feedback": "shorter"}, headers=alice
    )
    assert redo.status_code == 200, redo.text
    assert redo.json() == {"execution_id": first, "task": "step1", "approved": False, "rerun": True}
    again = await inbox_until(
        client,
        alice,
        lambda items: any(
            i["id"] == waiting["id"] and i["since"] > waiting["since"] for i in items
        ),
    )
    assert len(again) == 2

    for item in again:
        answered = await client.post(f"{INBOX}/{item['id']}", json={"approve": True}, headers=alice)
        assert answered.status_code == 200, answered.text
    for execution_id in (first, second):
        done = await client.get(
            f"{EXECUTIONS}/{execution_id}/result", params={"wait": 30}, headers=alice
        )
        assert done.json()["status"] == "completed"
    assert await inbox_until(client, alice, lambda items: items == []) == []
    stale = await client.post(f"{INBOX}/{waiting['id']}", json={"approve": True}, headers=alice)
    assert stale.status_code == 409
    await client.post(f"{EXECUTIONS}/{theirs}/cancel", headers=bob)
