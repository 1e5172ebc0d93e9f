"""The status read (GET /executions/{id}) as made cheaper for bench/read_path.py: the same
answer from fewer statements, and credentials checked as strictly as before."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from api.security import create_access_token, decode_access_token
from kasal.db.models import Execution, User, new_id, utcnow
from kasal.exceptions import AuthError
from tests.api.test_auth import assert_error
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    asgi_client,
    login,
    new_user,
    running_app,
)

EXECUTIONS = "/api/v1/executions"


async def _me(client, headers) -> tuple[str, str]:
    me = (await client.get("/api/v1/auth/me", headers=headers)).json()
    groups = (await client.get("/api/v1/groups", headers=headers)).json()
    return me["id"], next(g["id"] for g in groups if g["personal"])


async def _insert(app, ident: str | None = None, **values) -> str:
    ident = ident or new_id()
    async with app.state.kasal.sessions() as session, session.begin():
        session.add(Execution(id=ident, workflow_id=f"kasal-exec-{ident}", **values))
    return ident


def _detail(ident: str) -> dict:
    now = utcnow().isoformat()
    task = {"name": "t0", "agent": "a", "state": "completed", "attempts": 1}
    return {
        "execution_id": ident,
        "crew_name": "c",
        "state": "completed",
        "started_at": now,
        "ended_at": now,
        "tasks": [
            {**task, "json_dict": {"n": 1}},
            {**task, "name": "t1", "json_dict": {"n": 2}, "output_summary": "done"},
        ],
        "event_count": 7,
    }


async def test_a_finished_execution_reads_from_its_row_without_its_result(app, client, alice):
    user_id, group_id = await _me(client, alice)
    ident = new_id()
    now = utcnow()
    await _insert(
        app,
        ident,
        owner_id=user_id,
        group_id=group_id,
        crew_name="c",
        status="completed",
        spec={"tasks": [{"name": "t0", "agent": "a"}, {"name": "t1", "agent": "a"}]},
        inputs={"topic": "x"},
        created_at=now,
        started_at=now,
        ended_at=now + timedelta(seconds=1),
        token_usage={"total_tokens": 5, "requests": 1},
        status_detail=_detail(ident),
        result={"output": "big " * 1000},
        event_count=7,
    )
    answer = await client.get(f"{EXECUTIONS}/{ident}", headers=alice)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["status"] == "completed" and body["inputs"] == {"topic": "x"}
    assert [t["name"] for t in body["tasks"]] == ["t0", "t1"]
    assert body["tasks"][1]["output_summary"] == "done"
    assert body["json"] == {"n": 2}  # the last structured output, by its alias
    assert body["token_usage"]["total_tokens"] == 5 and body["event_count"] == 7
    assert "result" not in body and "output" not in body


async def test_a_row_without_progress_lists_its_spec_tasks_as_pending(app, client, alice):
    user_id, group_id = await _me(client, alice)
    ident = await _insert(
        app,
        owner_id=user_id,
        group_id=group_id,
        crew_name="c",
        status="failed",
        spec={"tasks": [{"name": "only", "agent": "a"}]},
        error="boom",
    )
    body = (await client.get(f"{EXECUTIONS}/{ident}", headers=alice)).json()
    assert body["status"] == "failed" and body["error"] == "boom"
    assert [(t["name"], t["state"]) for t in body["tasks"]] == [("only", "pending")]


async def test_another_groups_execution_stays_hidden(app, client, alice, admin):
    user_id, group_id = await _me(client, alice)
    ident = await _insert(
        app, owner_id=user_id, group_id=group_id, crew_name="c", status="completed"
    )
    bob = await new_user(client, admin)
    assert (await client.get(f"{EXECUTIONS}/{ident}", headers=bob)).status_code == 404
    assert (await client.get(f"{EXECUTIONS}/{ident}", headers=alice)).status_code == 200


async def _disable(app, client, admin) -> tuple[str, dict[str, str], dict[str, str]]:
    """A user's token and read key, both used once (so remembered), then the user disabled
    behind the API's back (in the database, as another replica would)."""
    headers = await new_user(client, admin)
    user_id, _ = await _me(client, headers)
    body = {"name": "k", "scopes": ["read"]}
    made = await client.post("/api/v1/keys", json=body, headers=headers)
    key = {"X-API-Key": made.json()["key"]}
    for each in (headers, key):
        assert (await client.get(EXECUTIONS, headers=each)).status_code == 200
    async with app.state.kasal.sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == user_id).values(is_active=False))
    return user_id, headers, key


async def test_a_disabled_account_stops_within_the_auth_cache_bound(app, client, admin):
    """Changed elsewhere (another replica, the database): a token's GET requests may be
    answered from the principal cache for at most ``auth_cache_seconds``, then it holds; a
    key is read on every request, so it stops at once."""
    bound = app.state.kasal.settings.auth_cache_seconds
    assert 0 < bound <= 1
    _, headers, key = await _disable(app, client, admin)
    assert (await client.get(EXECUTIONS, headers=key)).status_code == 401
    await asyncio.sleep(bound + 0.05)
    assert (await client.get(EXECUTIONS, headers=headers)).status_code == 401


async def test_a_change_made_through_this_process_holds_at_once(app, client, admin):
    """Any mutating request empties the cache (role changes among them)."""
    _, headers, key = await _disable(app, client, admin)
    made = await client.post("/api/v1/groups", json={"name": f"g-{new_id()}"}, headers=admin)
    assert made.status_code == 201
    for each in (headers, key):
        assert (await client.get(EXECUTIONS, headers=each)).status_code == 401


async def test_without_the_cache_a_disabled_account_stops_at_once(api_settings):
    settings = api_settings.model_copy(update={"auth_cache_seconds": 0})
    async with running_app(settings) as app, asgi_client(app) as client:
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        _, headers, key = await _disable(app, client, admin)
        for each in (headers, key):
            assert (await client.get(EXECUTIONS, headers=each)).status_code == 401


async def test_a_remembered_token_still_expires_on_time(app, client, admin, monkeypatch):
    assert (await client.get(EXECUTIONS, headers=admin)).status_code == 200
    import api.security

    later = api.security.time.time() + 10 * 24 * 3600
    monkeypatch.setattr(api.security.time, "time", lambda: later)
    answer = await client.get(EXECUTIONS, headers=admin)
    assert answer.status_code == 401 and "expired" in answer.json()["error"]["message"]


def test_a_verified_token_still_expires_on_time(api_settings, monkeypatch):
    token, lifetime = create_access_token("u1", api_settings)
    assert decode_access_token(token, api_settings) == "u1"
    assert decode_access_token(token, api_settings) == "u1"  # remembered
    import api.security

    later = api.security.time.time() + lifetime + 1
    monkeypatch.setattr(api.security.time, "time", lambda: later)
    with pytest.raises(AuthError, match="expired"):
        decode_access_token(token, api_settings)


def test_a_token_verified_under_one_secret_is_refused_under_another(api_settings):
    from pydantic import SecretStr

    token, _ = create_access_token("u1", api_settings)
    assert decode_access_token(token, api_settings) == "u1"
    other = api_settings.model_copy(update={"secret_key": SecretStr("x" * 48)})
    with pytest.raises(AuthError, match="invalid"):
        decode_access_token(token, other)


@pytest.mark.parametrize("group", ["not-a-group", "A" * 32, "0" * 31, "0" * 32 + "0"])
async def test_a_group_header_that_is_not_a_group_id_is_a_422(client, alice, group):
    """``X-Kasal-Group`` is read by the principal dependency itself (no FastAPI header
    parameter): a malformed one is still refused before anything is looked up."""
    response = await client.get(EXECUTIONS, headers={**alice, "X-Kasal-Group": group})
    error = assert_error(response, 422, "validation_error")
    assert error["details"][0]["field"] == "header.X-Kasal-Group"
    assert group not in response.text  # inputs are not echoed
    _, group_id = await _me(client, alice)
    ok = await client.get(EXECUTIONS, headers={**alice, "X-Kasal-Group": group_id})
    assert ok.status_code == 200, ok.text
