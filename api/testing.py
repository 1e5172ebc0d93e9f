"""The API in process, for tests and benchmarks: settings with an admin, the app with its
lifespan entered, an in-process HTTP client, sign-in, an offline crew spec."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from api.main import create_app
from kasal.settings import Settings

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-123"
TEST_SECRET = "test-secret-key-0123456789abcdef0123456789abcdef"


def api_settings_for(settings: Settings, **overrides: Any) -> Settings:
    """Test settings with an admin, a real secret and generous rate limits."""
    values: dict[str, Any] = {
        "admin_email": ADMIN_EMAIL,
        "admin_password": SecretStr(ADMIN_PASSWORD),
        "secret_key": SecretStr(TEST_SECRET),
        "login_rate_limit": "1000/minute",
        "execution_rate_limit": "1000/minute",
    }
    values.update(overrides)
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app with its lifespan entered (engine migrated, Temporal connected)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    """An httpx client that calls the app in-process."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30
    )


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    """Authorization headers for a user."""
    response = await client.post(
        "/api/v1/auth/login", json={"username": email, "password": password}
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def offline_spec(
    name: str = "crew",
    *,
    tasks: int = 2,
    latency_ms: int = 0,
    human_input: bool = False,
    placeholder: bool = False,
) -> dict[str, Any]:
    """A crew that runs on the offline LLM (deterministic, no network)."""
    return {
        "name": name,
        "agents": [
            {
                "name": "analyst",
                "role": "Analyst",
                "goal": "Analyse things",
                "llm": {"model": "offline/analyst", "options": {"latency_ms": latency_ms}},
            }
        ],
        "tasks": [
            {
                "name": f"step{i}",
                "description": f"Step {i} about {{topic}}" if placeholder else f"Step {i}",
                "expected_output": "A sentence",
                "agent": "analyst",
                "human_input": human_input and i == tasks - 1,
            }
            for i in range(tasks)
        ],
    }
