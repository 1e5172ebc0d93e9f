"""Liveness, readiness, the OpenAPI playground, CORS."""

from __future__ import annotations

from tests.api.test_auth import assert_error
from tests.fixtures.api import api_settings_for, asgi_client, running_app


async def test_health_and_docs(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "temporal": "ok"}
    docs = await client.get("/api/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = (await client.get("/api/openapi.json")).json()
    for path in (
        "/api/v1/auth/login",
        "/api/v1/crews/{crew_id}",
        "/api/v1/executions",
        "/api/v1/executions/{execution_id}/feedback",
        "/api/v1/traces/{job_id}",
    ):
        assert path in schema["paths"], path


async def test_embedded_without_a_server_fails_readiness_clearly(api_settings):
    from kasal.client import free_port

    settings = api_settings_for(api_settings, temporal_address="", embedded_port=free_port())
    async with running_app(settings) as app, asgi_client(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        error = assert_error(await client.get("/readyz"), 503, "not_ready")
        assert "kasal dev" in error["details"]["temporal"]


async def test_cors_from_config(api_settings):
    settings = api_settings_for(api_settings, cors_origins=["https://app.example.com"])
    async with running_app(settings) as app, asgi_client(app) as client:
        allowed = await client.options(
            "/api/v1/crews",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await client.get("/healthz", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers
