"""The whole path on PostgreSQL: API and worker share a fresh database through asyncpg."""

from __future__ import annotations

import pytest

from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    asgi_client,
    login,
    offline_spec,
    running_app,
    wait_for_status,
)
from tests.fixtures.db import postgres_available, postgres_database
from tests.fixtures.temporal import running_worker


async def test_execution_recorded_in_postgres(api_settings, temporal_client, task_queue):
    if not await postgres_available():
        pytest.skip("PostgreSQL is not reachable at the test URL")
    async with postgres_database() as url:
        settings = api_settings.model_copy(update={"database_url": url})
        async with (
            running_worker(temporal_client, task_queue, settings),
            running_app(settings) as app,
            asgi_client(app) as client,
        ):
            admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            started = await client.post(
                "/api/v1/executions",
                json={"spec": offline_spec()},
                headers=admin,
            )
            execution_id = started.json()["execution_id"]
            await wait_for_status(client, admin, execution_id, {"completed"})
            for _ in range(100):
                listed = await client.get(
                    "/api/v1/executions", params={"status": "completed"}, headers=admin
                )
                if listed.json()["total"] == 1:
                    break
            assert listed.json()["items"][0]["id"] == execution_id
            trace = (await client.get(f"/api/v1/traces/{execution_id}", headers=admin)).json()
            assert trace["finished"] and len(trace["events"]) == 8
            result = (
                await client.get(f"/api/v1/executions/{execution_id}/result", headers=admin)
            ).json()
            assert result["output"] and result["token_usage"]["requests"] == 2
            ready = await client.get("/readyz")
            assert ready.json() == {
                "status": "ready",
                "checks": {"database": "ok", "temporal": "ok"},
            }
