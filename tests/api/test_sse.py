"""SSE on a real uvicorn server: live events, heartbeats, and a resume from Last-Event-ID
that loses and repeats nothing; the AsyncAPI document of the WebSocket protocol."""

from __future__ import annotations

import json

import httpx

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    login,
    new_user,
    offline_spec,
    running_app,
    serving,
)


async def read_sse(response: httpx.Response, stop_after: int | None = None):
    """(messages, comments) from an SSE response; stops after ``stop_after`` events."""
    messages: list[dict] = []
    comments: list[str] = []
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line == "":
            if "data" in fields:
                messages.append(dict(fields))
                if stop_after is not None and len(messages) >= stop_after:
                    return messages, comments
            fields = {}
        else:
            name, _, value = line.partition(": ")
            fields[name] = value
    return messages, comments


async def test_sse_streams_live_resumes_from_last_event_id_and_heartbeats(settings, worker):
    api = api_settings_for(settings, sse_heartbeat_seconds=0.2)
    async with (
        running_app(api) as app,
        serving(app) as where,
        httpx.AsyncClient(base_url=f"http://{where}", timeout=30) as http,
    ):
        alice = await new_user(http, await login(http, ADMIN_EMAIL, ADMIN_PASSWORD))
        started = await http.post(
            "/api/v1/executions",
            json={"spec": offline_spec(tasks=3, latency_ms=500)},
            headers=alice,
        )
        execution_id = started.json()["execution_id"]
        url = f"/api/v1/executions/{execution_id}/events"

        async with http.stream("GET", url, headers=alice) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first, _ = await read_sse(response, stop_after=3)
        assert [int(m["id"]) for m in first] == [0, 1, 2]
        assert first[0]["event"] == "execution_started"

        # Reconnect as EventSource does: Last-Event-ID is the last id received.
        resumed_headers = {**alice, "Last-Event-ID": first[-1]["id"]}
        async with http.stream("GET", url, headers=resumed_headers) as response:
            rest, comments = await read_sse(response)
        assert rest[-1]["event"] == "stream_end"
        events = first + rest[:-1]
        offsets = [int(m["id"]) for m in events]
        assert offsets == list(range(len(events))), offsets  # none lost, none repeated
        assert json.loads(rest[-1]["data"])["next_offset"] == len(events)
        assert comments.count(": heartbeat") >= 1  # quiet while the offline model thinks
        assert events[-1]["event"] == "execution_complete"
        for message in events:
            body = json.loads(message["data"])
            assert body["offset"] == int(message["id"]) and body["type"] == message["event"]

        trace = (await http.get(f"/api/v1/traces/{execution_id}", headers=alice)).json()
        assert [json.loads(m["data"]) for m in events] == trace["events"]

        # A finished execution streams from the database, resumable the same way.
        stored_headers = {**alice, "Last-Event-ID": "4"}
        async with http.stream("GET", url, headers=stored_headers) as response:
            stored, _ = await read_sse(response)
        assert [int(m["id"]) for m in stored[:-1]] == list(range(5, len(events)))

        other = await new_user(http, await login(http, ADMIN_EMAIL, ADMIN_PASSWORD))
        assert (await http.get(url, headers=other)).status_code == 404


async def test_the_websocket_protocol_is_served_as_asyncapi(client):
    response = await client.get("/api/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"].startswith("3.")
    channel = document["channels"]["executionEvents"]
    assert channel["address"] == "/api/v1/ws"
    messages = document["components"]["messages"]
    for name in ("auth", "subscribe", "unsubscribe", "ping"):
        assert name in messages
    for name in ("authenticated", "subscribed", "event", "stream_end", "request_error", "pong"):
        assert name in messages
    event = document["components"]["schemas"]["EventOut"]
    assert {"type", "event", "execution_id", "offset", "timestamp"} <= set(event["required"])
    subscribe = document["components"]["schemas"]["SubscribeMessage"]
    assert subscribe["properties"]["from_offset"]["minimum"] == 0
    operations = document["operations"]
    assert {op["action"] for op in operations.values()} == {"send", "receive"}
