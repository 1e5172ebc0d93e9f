"""Issue 10: API keys, refresh tokens, groups and roles, the audit log, trusted proxies,
group quotas. Real API (uvicorn where a WebSocket is needed), real Temporal and worker."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text
from websockets.asyncio.client import connect

from api.deps import CurrentPrincipal
from api.security import InsecureConfigurationError
from kasal.db.models import ApiKey, AuditEvent
from tests.api.test_auth import assert_error
from tests.api.test_ws import receive, wait_for_record
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    api_settings_for,
    asgi_client,
    login,
    new_user,
    offline_spec,
    running_app,
    serving,
    wait_for_status,
)

pytestmark = pytest.mark.timeout(120)

EXECUTIONS = "/api/v1/executions"


async def make_key(client, headers, scopes, **extra) -> dict:
    response = await client.post(
        "/api/v1/keys", json={"name": "ci", "scopes": scopes, **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_run_key_starts_and_reads_but_cannot_administer(app, client, admin, alice, worker):
    made = await make_key(client, alice, ["run"])
    secret = made["key"]
    assert secret.startswith("kasal_") and secret.startswith(made["prefix"] + "_")
    # Stored as a digest only, and never listed again.
    async with app.state.kasal.sessions() as session:
        row = await session.get(ApiKey, made["id"])
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in json.dumps([row.prefix, row.key_hash, row.name])
    listed = (await client.get("/api/v1/keys", headers=alice)).json()
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]

    as_bearer = {"Authorization": f"Bearer {secret}"}
    as_header = {"X-API-Key": secret}
    started = await client.post(EXECUTIONS, json={"spec": offline_spec()}, headers=as_bearer)
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    done = await wait_for_status(client, as_header, execution_id, {"completed", "failed"})
    assert done["status"] == "completed"
    # The person sees what their key started: it is in their group.
    assert (await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice)).status_code == 200
    listed = (await client.get("/api/v1/keys", headers=alice)).json()
    assert listed[0]["last_used_at"] is not None

    new_user_body = {"email": "x-run-key@example.com", "password": PASSWORD}
    assert_error(
        await client.post("/api/v1/auth/users", json=new_user_body, headers=as_header),
        403,
        "forbidden",
    )
    # Even an admin's run key cannot create users, nor make keys.
    admin_run = (await make_key(client, admin, ["run"]))["key"]
    assert_error(
        await client.post(
            "/api/v1/auth/users", json=new_user_body, headers={"X-API-Key": admin_run}
        ),
        403,
        "forbidden",
    )
    assert_error(
        await client.post(
            "/api/v1/keys", json={"name": "n", "scopes": ["read"]}, headers=as_header
        ),
        403,
        "forbidden",
    )
    # A read key reads, and cannot start.
    reader = {"X-API-Key": (await make_key(client, alice, ["read"]))["key"]}
    assert (await client.get(f"{EXECUTIONS}/{execution_id}", headers=reader)).status_code == 200
    assert_error(
        await client.post(EXECUTIONS, json={"spec": offline_spec()}, headers=reader),
        403,
        "forbidden",
    )
    # A user cannot mint a key beyond their role: alice is admin of her own group only.
    bob = await new_user(client, admin)
    bob_group = (await client.get("/api/v1/groups", headers=bob)).json()[0]["id"]
    refused = await client.post(
        "/api/v1/keys",
        json={"name": "n", "scopes": ["run"], "group_id": bob_group},
        headers=alice,
    )
    assert_error(refused, 404, "not_found")

    # Revoked: 401 on the very next request.
    assert (await client.delete(f"/api/v1/keys/{made['id']}", headers=alice)).status_code == 204
    for headers in (as_bearer, as_header):
        answer = await client.get(f"{EXECUTIONS}/{execution_id}", headers=headers)
        assert assert_error(answer, 401, "unauthorized")["message"] == "the API key was revoked"


async def test_an_expired_key_is_refused(app, client, alice):
    made = await make_key(
        client, alice, ["read"], expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    headers = {"X-API-Key": made["key"]}
    ok = await client.get(EXECUTIONS, headers=headers)
    assert ok.status_code == 200, ok.text
    async with app.state.kasal.sessions() as session, session.begin():
        row = await session.get(ApiKey, made["id"])
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    answer = await client.get(EXECUTIONS, headers=headers)
    assert assert_error(answer, 401, "unauthorized")["message"] == "the API key has expired"
    bad = {"X-API-Key": made["key"][:-2] + "xx"}
    assert_error(await client.get(EXECUTIONS, headers=bad), 401, "unauthorized")


async def test_refresh_tokens_rotate_and_a_replay_revokes_the_sign_in(client, admin):
    first = (
        await client.post(
            "/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
    ).json()
    assert first["refresh_token"].startswith("kasalr_")
    second = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200, second.text
    second = second.json()
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {second['access_token']}"}
    )
    assert me.json()["email"] == ADMIN_EMAIL
    # The first token again: stolen or replayed. Its whole sign-in ends, successor included.
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_error(replay, 401, "unauthorized")
    after = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert_error(after, 401, "unauthorized")


@pytest.fixture
async def team_server(api_settings):
    """The API on uvicorn (for the WebSocket), with an admin."""
    from api.main import create_app

    app = create_app(api_settings)
    async with (
        serving(app) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http,
    ):
        admin = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
        yield address, http, admin, app


async def test_a_group_shares_by_role_and_other_groups_see_nothing(team_server, worker):
    address, http, admin, app = team_server
    users = {}
    for name in ("editor", "operator", "viewer", "outsider"):
        users[name] = await new_user(http, admin)
    ids = {n: (await http.get("/api/v1/auth/me", headers=h)).json()["id"] for n, h in users.items()}
    group = await http.post("/api/v1/groups", json={"name": "research"}, headers=admin)
    assert group.status_code == 201, group.text
    group_id = group.json()["id"]
    for name in ("editor", "operator", "viewer"):
        added = await http.put(
            f"/api/v1/groups/{group_id}/members",
            json={"user_id": ids[name], "role": name},
            headers=admin,
        )
        assert added.status_code == 200, added.text
    in_team = {n: {**h, "X-Kasal-Group": group_id} for n, h in users.items() if n != "outsider"}
    outsider = users["outsider"]

    # Editors make crews; operators and viewers do not.
    crew_body = offline_spec("shared")
    for name in ("operator", "viewer"):
        refused = await http.post("/api/v1/crews", json=crew_body, headers=in_team[name])
        assert_error(refused, 403, "forbidden")
    crew = await http.post("/api/v1/crews", json=crew_body, headers=in_team["editor"])
    assert crew.status_code == 201 and crew.json()["group_id"] == group_id
    crew_id = crew.json()["id"]
    # Everyone in the group sees it (whatever group they act in); the operator runs it.
    for name in ("editor", "operator", "viewer"):
        assert (await http.get(f"/api/v1/crews/{crew_id}", headers=users[name])).status_code == 200
    assert_error(
        await http.post(EXECUTIONS, json={"crew_id": crew_id}, headers=users["viewer"]),
        403,
        "forbidden",
    )
    assert_error(
        await http.put(f"/api/v1/crews/{crew_id}", json=crew_body, headers=users["operator"]),
        403,
        "forbidden",
    )
    started = await http.post(EXECUTIONS, json={"crew_id": crew_id}, headers=users["operator"])
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    done = await wait_for_status(http, users["viewer"], execution_id, {"completed", "failed"})
    assert done["status"] == "completed" and done["group_id"] == group_id
    await wait_for_record(app, execution_id)
    listed = (await http.get(EXECUTIONS, headers=users["editor"])).json()
    assert execution_id in [e["id"] for e in listed["items"]]

    # Another group's user: 404 on every route, as if nothing existed.
    for method, path, body in [
        ("GET", f"/api/v1/crews/{crew_id}", None),
        ("PUT", f"/api/v1/crews/{crew_id}", crew_body),
        ("DELETE", f"/api/v1/crews/{crew_id}", None),
        ("POST", EXECUTIONS, {"crew_id": crew_id}),
        ("GET", f"{EXECUTIONS}/{execution_id}", None),
        ("GET", f"{EXECUTIONS}/{execution_id}/result", None),
        ("POST", f"{EXECUTIONS}/{execution_id}/cancel", None),
        ("POST", f"{EXECUTIONS}/{execution_id}/feedback", {"approve": True}),
        ("GET", f"/api/v1/traces/{execution_id}", None),
        ("GET", f"/api/v1/groups/{group_id}/members", None),
    ]:
        answer = await http.request(method, path, json=body, headers=outsider)
        assert_error(answer, 404, "not_found")
    # A group header naming a group one is not in is a 404 too.
    assert_error(
        await http.get(EXECUTIONS, headers={**outsider, "X-Kasal-Group": group_id}),
        404,
        "not_found",
    )
    assert (await http.get(EXECUTIONS, headers=outsider)).json()["total"] == 0
    assert (await http.get("/api/v1/crews", headers=outsider)).json()["total"] == 0
    # And on the WebSocket: the outsider is refused, a member streams the stored trace.
    for headers, expect in ((outsider, "not_found"), (users["viewer"], "subscribed")):
        ws = await connect(f"ws://{address}/api/v1/ws", additional_headers=headers)
        assert (await receive(ws))["type"] == "authenticated"
        await ws.send(json.dumps({"type": "subscribe", "execution_id": execution_id}))
        answer = await receive(ws)
        got = answer["type"] if answer["type"] == "subscribed" else answer["error"]["code"]
        assert got == expect, answer
        await ws.close()
    # An API key of the group sees it over the socket too; the outsider's key does not.
    outsider_key = (await make_key(http, outsider, ["read"]))["key"]
    ws = await connect(f"ws://{address}/api/v1/ws", additional_headers={"X-API-Key": outsider_key})
    assert (await receive(ws))["type"] == "authenticated"
    await ws.send(json.dumps({"type": "subscribe", "execution_id": execution_id}))
    assert (await receive(ws))["error"]["code"] == "not_found"
    await ws.close()

    # Every mutation above is in the audit log, with who, what, from where.
    log = await http.get("/api/v1/audit", params={"limit": 100}, headers=admin)
    assert log.status_code == 200, log.text
    entries = log.json()["items"]

    def find(action, status_code, actor=None, target=None):
        return [
            e
            for e in entries
            if e["action"] == action
            and e["status_code"] == status_code
            and (actor is None or e["actor_user_id"] == actor)
            and (target is None or e["target_id"] == target)
        ]

    assert find("group.create", 201, target=group_id)
    for name in ("editor", "operator", "viewer"):
        member = find("group.member.set", 200, target=ids[name])
        assert member and member[0]["after"] == {"role": name}
    created = find("crew.create", 201, actor=ids["editor"], target=crew_id)
    assert created and created[0]["group_id"] == group_id
    assert created[0]["address"] == "127.0.0.1" and created[0]["after"] == {"crew_id": crew_id}
    start = find("execution.start", 202, actor=ids["operator"], target=execution_id)
    assert start and start[0]["after"]["crew_id"] == crew_id
    assert len(find("crew.create", 403)) == 2
    assert find("execution.start", 403, actor=ids["viewer"])
    assert find("crew.replace", 403, actor=ids["operator"], target=crew_id)
    # The outsider's refused mutations, named by route and target.
    assert find("crew.delete", 404, actor=ids["outsider"], target=crew_id)
    assert find("execution.cancel", 404, actor=ids["outsider"], target=execution_id)
    assert find("api_key.create", 201, actor=ids["outsider"])
    # Platform admins read all of it; a group admin only their groups' part (the operator
    # administers nothing but their personal group); an operator's key not even that.
    own = (await http.get("/api/v1/audit", headers=users["operator"])).json()["items"]
    assert own and {e["group_id"] for e in own}.isdisjoint({group_id})
    operator_key = {"X-API-Key": (await make_key(http, users["operator"], ["run"]))["key"]}
    assert_error(await http.get("/api/v1/audit", headers=operator_key), 403, "forbidden")
    # Nobody rewrites it, not even with the database's own credentials.
    async with app.state.kasal.sessions() as session:
        for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(Exception, match="append-only"):
                await session.execute(text(statement))
            await session.rollback()
        count = await session.scalar(select(AuditEvent.id).limit(1))
        assert count is not None


async def test_trusted_proxy_mode_is_refused_unless_the_proxy_is_named(settings):
    with pytest.raises(InsecureConfigurationError, match="KASAL_TRUSTED_PROXIES"):
        async with running_app(
            api_settings_for(settings, trusted_proxy_header="X-Forwarded-Email")
        ):
            pass
    proxied = api_settings_for(
        settings, trusted_proxy_header="X-Forwarded-Email", trusted_proxies=["10.1.2.0/24"]
    )
    header = {"X-Forwarded-Email": "someone@example.com"}
    async with running_app(proxied) as app:
        proxy = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 4000)),
            base_url="http://test",
        )
        elsewhere = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("192.0.2.9", 4000)),
            base_url="http://test",
        )
        async with proxy, elsewhere:
            me = await proxy.get("/api/v1/auth/me", headers=header)
            assert me.status_code == 200 and me.json()["email"] == "someone@example.com"
            # The same header from anywhere else authenticates nobody.
            assert_error(
                await elsewhere.get("/api/v1/auth/me", headers=header), 401, "unauthorized"
            )
            # No password works for the account the proxy vouched for.
            login_attempt = await elsewhere.post(
                "/api/v1/auth/login", json={"username": "someone@example.com", "password": "x"}
            )
            assert login_attempt.status_code == 401


async def test_a_group_runs_at_most_its_quota_of_executions(settings, worker):
    quota = api_settings_for(settings, group_max_concurrent_executions=1)
    async with running_app(quota) as app, asgi_client(app) as client:
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        alice = await new_user(client, admin)
        bob = await new_user(client, admin)
        slow = {"spec": offline_spec("slow", tasks=1, latency_ms=1500)}
        first = await client.post(EXECUTIONS, json=slow, headers=alice)
        assert first.status_code == 202
        second = await client.post(EXECUTIONS, json=slow, headers=alice)
        error = assert_error(second, 429, "quota_exceeded")
        assert error["details"]["quota"] == 1 and second.headers["Retry-After"]
        # Another group's quota is its own.
        assert (await client.post(EXECUTIONS, json=slow, headers=bob)).status_code == 202
        first_id = first.json()["execution_id"]
        await wait_for_status(client, alice, first_id, {"completed"})
        # The workflow reports "completed" before its record activity writes the row, and
        # until then it runs (and holds the slot): a faster status read sees that window.
        await wait_for_record(app, first_id)
        again = await client.post(EXECUTIONS, json=slow, headers=alice)
        assert again.status_code == 202, again.text
        # A replay is a new execution of the group: the quota holds for it too.
        replay = await client.post(
            f"{EXECUTIONS}/{first_id}/replay", json={"from_task": "step0"}, headers=alice
        )
        assert_error(replay, 429, "quota_exceeded")


async def test_a_mutation_no_route_describes_is_audited_by_method_and_template(api_settings):
    """Routes added later (schedules, webhooks, ...) are audited without doing anything."""
    from api.main import create_app

    app = create_app(api_settings)

    @app.post("/api/v1/things/{thing_id}", status_code=201)
    async def make_thing(thing_id: str, principal: CurrentPrincipal) -> dict:
        return {"thing_id": thing_id}

    async with app.router.lifespan_context(app), asgi_client(app) as client:
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        made = await client.post("/api/v1/things/t-1", headers=admin)
        assert made.status_code == 201, made.text
        assert_error(await client.post("/api/v1/things/t-2"), 401, "unauthorized")
        entries = (
            await client.get(
                "/api/v1/audit", params={"action": "POST /api/v1/things/{thing_id}"}, headers=admin
            )
        ).json()["items"]
    assert [(e["target_id"], e["status_code"], e["actor_email"]) for e in entries] == [
        ("t-2", 401, None),
        ("t-1", 201, ADMIN_EMAIL),
    ]


async def test_a_socket_opened_with_a_key_stops_when_the_key_is_revoked(team_server):
    address, http, admin, _app = team_server
    made = await make_key(http, admin, ["read"])
    ws = await connect(f"ws://{address}/api/v1/ws", additional_headers={"X-API-Key": made["key"]})
    assert (await receive(ws))["type"] == "authenticated"
    await ws.send(json.dumps({"type": "subscribe", "execution_id": "0" * 32}))
    assert (await receive(ws))["error"]["code"] == "not_found"  # the key works
    assert (await http.delete(f"/api/v1/keys/{made['id']}", headers=admin)).status_code == 204
    await ws.send(json.dumps({"type": "subscribe", "execution_id": "0" * 32}))
    refused = await receive(ws)
    assert refused["error"]["code"] == "unauthorized", refused
    await ws.wait_closed()
    assert ws.close_code == 1008
