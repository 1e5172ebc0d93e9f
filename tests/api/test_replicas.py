"""Several API processes on one PostgreSQL database, as replicas behind a load balancer.

Real uvicorn processes (not in-process apps): each has its own engine, sessions and
Temporal client, so startup seeding and idempotent starts race for real (issue 11, 8-9).
"""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from tests.fixtures.api import ADMIN_EMAIL, ADMIN_PASSWORD, api_processes, offline_spec
from tests.fixtures.db import postgres_available, postgres_database

EXECUTIONS = "/api/v1/executions"
#: Independent races per test: the old handler lost one in 1-3 of 3.
ROUNDS = 6


@pytest.fixture
async def postgres_url():
    """A fresh, empty PostgreSQL database (no schema, no admin yet)."""
    if not await postgres_available():
        pytest.skip("PostgreSQL is not reachable at the test URL")
    async with postgres_database() as url:
        yield url


async def token_headers(base_url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post(
            "/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_replicas_started_together_on_a_fresh_database_all_come_up(
    postgres_url, temporal_server, task_queue
):
    # Three rather than two: each replica seeds the admin, and every extra one is another
    # chance for the check-then-insert race that used to kill all but one.
    async with api_processes(3, postgres_url, temporal_server.address, task_queue) as apis:
        for api in apis:
            assert api.process is not None and api.process.poll() is None
            await token_headers(api.base_url)  # each one serves the one seeded admin


async def test_one_idempotency_key_raced_across_two_replicas_is_one_execution(
    postgres_url, temporal_server, task_queue
):
    async with api_processes(2, postgres_url, temporal_server.address, task_queue) as apis:
        headers = await token_headers(apis[0].base_url)
        clients = [httpx.AsyncClient(base_url=a.base_url, timeout=30) for a in apis]
        try:
            body = {"spec": offline_spec("raced", tasks=1)}
            for round_ in range(ROUNDS):
                key = {**headers, "Idempotency-Key": f"replicas-{round_}"}
                # Two requests per replica: the same key, four requests at the same moment.
                targets = list(itertools.islice(itertools.cycle(clients), 4))
                responses = await asyncio.gather(
                    *(c.post(EXECUTIONS, json=body, headers=key) for c in targets)
                )
                assert [r.status_code for r in responses] == [202] * 4, [r.text for r in responses]
                assert len({r.json()["execution_id"] for r in responses}) == 1
            listed = (await clients[1].get(EXECUTIONS, headers=headers)).json()
            assert listed["total"] == ROUNDS
            reused = await clients[0].post(
                EXECUTIONS,
                json={"spec": offline_spec("other", tasks=1)},
                headers={**headers, "Idempotency-Key": "replicas-0"},
            )
            assert reused.status_code == 409 and reused.json()["error"]["code"] == "conflict"
        finally:
            for client in clients:
                await client.aclose()


async def test_one_idempotency_key_raced_within_one_replica_is_one_execution(
    postgres_url, temporal_server, task_queue
):
    async with api_processes(1, postgres_url, temporal_server.address, task_queue) as apis:
        headers = await token_headers(apis[0].base_url)
        async with httpx.AsyncClient(base_url=apis[0].base_url, timeout=30) as client:
            body = {"spec": offline_spec("raced", tasks=1)}
            for round_ in range(ROUNDS):
                key = {**headers, "Idempotency-Key": f"one-{round_}"}
                responses = await asyncio.gather(
                    *(client.post(EXECUTIONS, json=body, headers=key) for _ in range(4))
                )
                assert [r.status_code for r in responses] == [202] * 4, [r.text for r in responses]
                assert len({r.json()["execution_id"] for r in responses}) == 1
