"""Issue 10: rate limits that hold across replicas (Redis), and a login lockout that does
not lock the right password out from another address."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from tests.api.test_auth import assert_error
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_processes,
    api_settings_for,
    running_app,
)

pytestmark = pytest.mark.timeout(120)

REDIS_URL = "redis://127.0.0.1:6379/0"
LOGIN = "/api/v1/auth/login"
RIGHT = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
WRONG = {"username": ADMIN_EMAIL, "password": "not-the-password"}


def client_from(app, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 5000)), base_url="http://test"
    )


async def test_failed_logins_lock_out_that_address_only(settings):
    limited = api_settings_for(settings, login_failure_limit="3/minute")
    async with (
        running_app(limited) as app,
        client_from(app, "198.51.100.7") as attacker,
        client_from(app, "203.0.113.5") as owner,
    ):
        for _ in range(3):
            assert_error(await attacker.post(LOGIN, json=WRONG), 401, "unauthorized")
        # Locked out from that address, even with the right password...
        locked = await attacker.post(LOGIN, json=RIGHT)
        assert_error(locked, 429, "rate_limited")
        assert int(locked.headers["Retry-After"]) >= 1
        # ... while the owner, elsewhere, signs in, and failures elsewhere did not count.
        assert (await owner.post(LOGIN, json=RIGHT)).status_code == 200
        assert_error(await owner.post(LOGIN, json=WRONG), 401, "unauthorized")
        assert (await owner.post(LOGIN, json=RIGHT)).status_code == 200


@pytest.fixture
async def redis_prefix():
    """A Redis key prefix of this test's own, deleted afterwards."""
    prefix = f"kasal-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_two_api_processes_share_one_limit_in_redis(
    tmp_path, temporal_server, task_queue, redis_prefix
):
    database = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    async with (
        api_processes(
            2,
            database,
            temporal_server.address,
            task_queue,
            KASAL_REDIS_URL=REDIS_URL,
            KASAL_REDIS_PREFIX=redis_prefix,
            KASAL_LOGIN_RATE_LIMIT="6/minute",
        ) as (one, two),
        httpx.AsyncClient(base_url=one.base_url, timeout=10) as first,
        httpx.AsyncClient(base_url=two.base_url, timeout=10) as second,
    ):
        # Six logins, alternating between the replicas: all within the one limit.
        for client in (first, second) * 3:
            answer = await client.post(LOGIN, json=RIGHT)
            assert answer.status_code == 200, answer.text
        # The seventh is refused whichever replica it reaches: each alone has seen 3.
        for client in (first, second):
            assert_error(await client.post(LOGIN, json=RIGHT), 429, "rate_limited")
    # The counts are in Redis, under the deployment's prefix.
    client = aioredis.from_url(REDIS_URL)
    try:
        assert [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
    finally:
        await client.aclose()


async def test_api_keys_and_groups_have_limits_of_their_own(settings):
    limited = api_settings_for(
        settings, api_key_rate_limit="3/minute", group_execution_rate_limit="2/minute"
    )
    async with running_app(limited) as app, client_from(app, "127.0.0.1") as client:
        admin = {
            "Authorization": "Bearer "
            + (await client.post(LOGIN, json=RIGHT)).json()["access_token"]
        }
        keys = []
        for _ in range(2):
            made = await client.post(
                "/api/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=admin
            )
            keys.append({"X-API-Key": made.json()["key"]})
        for _ in range(3):
            assert (await client.get("/api/v1/crews", headers=keys[0])).status_code == 200
        assert_error(await client.get("/api/v1/crews", headers=keys[0]), 429, "rate_limited")
        # Another key, and the person behind them, are not held back.
        assert (await client.get("/api/v1/crews", headers=keys[1])).status_code == 200
        assert (await client.get("/api/v1/crews", headers=admin)).status_code == 200
        # Starts per group: the third start in the minute is refused before Temporal is asked.
        bad_spec = {"spec": {"name": "x"}}  # refused after the limit is counted
        for _ in range(2):
            answer = await client.post("/api/v1/executions", json=bad_spec, headers=admin)
            assert answer.status_code != 429, answer.text
        limited_answer = await client.post("/api/v1/executions", json=bad_spec, headers=admin)
        assert_error(limited_answer, 429, "rate_limited")
        assert "group execution start" in limited_answer.json()["error"]["message"]
