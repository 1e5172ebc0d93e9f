"""The WebSocket relay on a real uvicorn server with real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.relay import Channel, Relay, SlowClientError
from kasal.execution import Event, EventType
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    login,
    new_user,
    offline_spec,
    serving,
    wait_for_status,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def server(api_settings):
    """The API on a real uvicorn server: (ws url, http client, admin headers)."""
    from api.main import create_app  # uvicorn runs the lifespan itself

    app = create_app(api_settings)
    async with (
        serving(app) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http,
    ):
        admin = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
        yield f"ws://{address}/api/v1/ws", http, admin, app


async def wait_for_record(app, execution_id: str) -> None:
    """Until the worker's record activity has written the finished execution."""
    from kasal.db.models import Execution

    for _ in range(100):
        async with app.state.kasal.sessions() as session:
            row = await session.get(Execution, execution_id)
            if row is not None and row.status_detail is not None:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the execution was never recorded")


async def eventually(condition) -> None:
    """Until ``condition()`` holds, yielding to the loop between checks (bound it by a
    timeout: a condition that never holds hangs)."""
    while not condition():
        await asyncio.sleep(0.001)


async def receive(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 20))


async def open_socket(url: str, headers: dict[str, str], *, header_auth: bool = True):
    if header_auth:
        ws = await connect(url, additional_headers=headers)
    else:
        ws = await connect(url)
        token = headers["Authorization"].split()[1]
        await ws.send(json.dumps({"type": "auth", "token": token}))
    hello = await receive(ws)
    assert hello["type"] == "authenticated", hello
    return ws


async def subscribe(ws, execution_id: str, from_offset: int = 0) -> None:
    await ws.send(
        json.dumps({"type": "subscribe", "execution_id": execution_id, "from_offset": from_offset})
    )
    ack = await receive(ws)
    assert ack == {"type": "subscribed", "execution_id": execution_id, "from_offset": from_offset}


async def read_events(ws, *, stop_after: int | None = None) -> tuple[list[dict], bool]:
    """Events until stream_end (True) or until ``stop_after`` events (False)."""
    events: list[dict] = []
    while True:
        message = await receive(ws)
        if message["type"] == "stream_end":
            if events:
                assert message["next_offset"] == events[-1]["offset"] + 1
            return events, True
        assert "offset" in message, message
        events.append(message)
        if stop_after is not None and len(events) >= stop_after:
            return events, False


async def test_two_clients_one_reconnecting_both_get_every_event_once(server, worker):
    url, http, admin, _app = server
    alice = await new_user(http, admin)
    response = await http.post(
        "/api/v1/executions",
        json={"spec": offline_spec(tasks=4, latency_ms=300)},
        headers=alice,
    )
    execution_id = response.json()["execution_id"]

    async def steady() -> list[dict]:
        ws = await open_socket(url, alice)
        await subscribe(ws, execution_id)
        events, ended = await read_events(ws)
        assert ended
        await ws.close()
        return events

    async def reconnecting() -> list[dict]:
        ws = await open_socket(url, alice, header_auth=False)
        await subscribe(ws, execution_id)
        first, ended = await read_events(ws, stop_after=3)
        assert not ended, "the execution should still run when the client drops"
        await ws.close()  # the connection is lost mid-execution
        await asyncio.sleep(0.5)  # events keep coming while it is away
        ws = await open_socket(url, alice)
        await subscribe(ws, execution_id, from_offset=first[-1]["offset"] + 1)
        rest, ended = await read_events(ws)
        assert ended
        await ws.close()
        return first + rest

    one, two = await asyncio.gather(steady(), reconnecting())
    trace = (
        await http.get(f"/api/v1/traces/{execution_id}", params={"limit": 1000}, headers=alice)
    ).json()["events"]
    assert len(trace) == 4 * 3 + 2  # started, per task (start, llm call, complete), completed
    for received in (one, two):
        assert [e["offset"] for e in received] == list(range(len(trace)))
        assert received == trace
    kinds = [e["type"] for e in one]
    assert kinds[0] == "execution_started" and kinds[-1] == "execution_complete"
    assert {"task_start", "task_complete", "llm_call"} <= set(kinds)
    first = one[1]
    assert set(first) >= {
        "type",
        "offset",
        "execution_id",
        "data",
        "timestamp",
        "task",
        "agent",
        "attempt",
    }
    assert first["execution_id"] == execution_id and first["task"] == "step0"


async def test_human_input_over_rest_with_events_on_the_websocket(server, worker):
    """Review requested on the socket, re-run with feedback over REST, then approved."""
    url, http, admin, _app = server
    alice = await new_user(http, admin)
    spec = offline_spec(tasks=1, human_input=True)
    execution_id = (
        await http.post("/api/v1/executions", json={"spec": spec}, headers=alice)
    ).json()["execution_id"]
    feedback = f"/api/v1/executions/{execution_id}/feedback"
    ws = await open_socket(url, alice)
    await subscribe(ws, execution_id)
    received: list[dict] = []
    reviews: list[dict] = []
    while True:
        message = await receive(ws)
        if message["type"] == "stream_end":
            break
        received.append(message)
        if message["type"] == "human_input_requested":
            reviews.append(message)
            answer = {"feedback": "Add a number to it."} if len(reviews) == 1 else {"approve": True}
            response = await http.post(feedback, json=answer, headers=alice)
            assert response.status_code == 200, response.text
    await ws.close()
    kinds = [e["type"] for e in received]
    assert kinds.count("human_input_requested") == 2
    assert kinds.count("task_start") == 2  # the first run, and the run with the feedback
    assert kinds[-1] == "execution_complete"
    first, second = (r["data"]["output"] for r in reviews)
    assert first != second  # the re-run's prompt carried the feedback
    result = (await http.get(f"/api/v1/executions/{execution_id}/result", headers=alice)).json()
    assert result["output"] == second


async def test_finished_executions_replay_from_the_database(server, worker):
    url, http, admin, app = server
    alice = await new_user(http, admin)
    execution_id = (
        await http.post("/api/v1/executions", json={"spec": offline_spec()}, headers=alice)
    ).json()["execution_id"]
    await wait_for_status(http, alice, execution_id, {"completed"})
    await wait_for_record(app, execution_id)
    ws = await open_socket(url, alice)
    await subscribe(ws, execution_id, from_offset=5)
    events, ended = await read_events(ws)
    assert ended and [e["offset"] for e in events] == [5, 6, 7]
    assert events[-1]["type"] == "execution_complete"
    assert app.state.kasal.relay.channels == {}  # served from the database, no upstream
    await ws.close()


async def test_subscriptions_are_checked_and_bad_messages_answered(server, worker):
    url, http, admin, _app = server
    alice = await new_user(http, admin)
    bob = await new_user(http, admin)
    execution_id = (
        await http.post("/api/v1/executions", json={"spec": offline_spec()}, headers=alice)
    ).json()["execution_id"]
    ws = await open_socket(url, bob)
    await ws.send(json.dumps({"type": "subscribe", "execution_id": execution_id}))
    refused = await receive(ws)
    assert refused["type"] == "request_error" and refused["error"]["code"] == "not_found"
    for bad in (
        "not json",
        json.dumps({"type": "dance"}),
        json.dumps({"type": "subscribe"}),
        json.dumps({"type": "subscribe", "execution_id": "x"}),
        json.dumps({"type": "subscribe", "execution_id": execution_id, "from_offset": -1}),
    ):
        await ws.send(bad)
        answer = await receive(ws)
        assert answer["type"] == "request_error", answer
        assert set(answer["error"]) == {"code", "message", "details"}
    await ws.send(json.dumps({"type": "ping"}))
    assert await receive(ws) == {"type": "pong"}
    await ws.close()


@pytest.mark.parametrize("token", ["", "garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
async def test_unauthenticated_sockets_are_closed(server, token):
    url, _http, _admin, _app = server
    ws = await connect(url)
    await ws.send(json.dumps({"type": "auth", "token": token} if token else {"type": "ping"}))
    refused = await receive(ws)
    assert refused["type"] == "request_error" and refused["error"]["code"] == "unauthorized"
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 1008


def _event(offset: int) -> Event:
    return Event(
        type=EventType.LLM_CALL, timestamp=datetime.now(UTC), offset=offset, data={"n": offset}
    )


async def test_a_slow_client_is_dropped_and_slows_nobody():
    relay = Relay(temporal=None, sessions=None, max_lag=5)  # type: ignore[arg-type]
    channel = Channel(relay, "e" * 32)  # fed by hand: no upstream
    fast: list[int] = []
    slow: list[int] = []
    release = asyncio.Event()

    async def fast_send(text: str) -> None:
        fast.append(json.loads(text)["offset"])

    async def slow_send(text: str) -> None:
        slow.append(json.loads(text)["offset"])
        await release.wait()  # this client's socket takes nothing more

    fast_task = asyncio.create_task(channel.stream(0, fast_send))
    slow_task = asyncio.create_task(channel.stream(0, slow_send))
    for offset in range(20):
        channel.publish(_event(offset))
        await asyncio.sleep(0)
    # The fast client keeps up while the slow one is stuck: wait for that, not for a while.
    await asyncio.wait_for(eventually(lambda: fast == list(range(20))), 5)
    release.set()
    with pytest.raises(SlowClientError):
        await asyncio.wait_for(slow_task, 5)
    channel._end()
    await asyncio.wait_for(fast_task, 5)
    assert slow == [0]


async def test_a_client_resuming_far_behind_catches_up():
    """Starting 30 events back with a lag limit of 5 is a backlog, not slowness."""
    relay = Relay(temporal=None, sessions=None, max_lag=5)  # type: ignore[arg-type]
    channel = Channel(relay, "f" * 32)
    for offset in range(30):
        channel.publish(_event(offset))
    received: list[int] = []

    async def send(text: str) -> None:
        received.append(json.loads(text)["offset"])
        await asyncio.sleep(0)

    reader = asyncio.create_task(channel.stream(2, send))
    for offset in range(30, 33):
        channel.publish(_event(offset))
        await asyncio.sleep(0)
    channel._end()
    await asyncio.wait_for(reader, 5)
    assert received == list(range(2, 33))


async def test_a_socket_ends_when_its_token_expires(server):
    """Authentication is not forever: the connection closes when its token expires."""
    from datetime import timedelta

    import jwt as pyjwt

    from api.security import ALGORITHM, ISSUER

    url, http, admin, app = server
    alice = await new_user(http, admin)
    me = (await http.get("/api/v1/auth/me", headers=alice)).json()
    now = datetime.now(UTC)
    short = pyjwt.encode(
        {
            "sub": me["id"],
            "iat": now,
            "exp": now + timedelta(seconds=2),
            "iss": ISSUER,
            "typ": "access",
        },
        app.state.kasal.settings.secret_key.get_secret_value(),
        algorithm=ALGORITHM,
    )
    ws = await open_socket(url, {"Authorization": f"Bearer {short}"})
    await ws.send(json.dumps({"type": "ping"}))
    assert await receive(ws) == {"type": "pong"}
    ended = await receive(ws)  # within about two seconds, unasked
    assert ended["error"]["code"] == "unauthorized" and "expired" in ended["error"]["message"]
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
