"""Fixtures of the API tests: an app per test on the session's Temporal server."""

from __future__ import annotations

import pytest

from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    asgi_client,
    login,
    new_user,
    running_app,
)


@pytest.fixture
def api_settings(settings):
    """Settings with an admin, a proper secret and generous rate limits."""
    return api_settings_for(settings)


@pytest.fixture
async def app(api_settings):
    """The app with its lifespan entered."""
    async with running_app(api_settings) as app:
        yield app


@pytest.fixture
async def client(app):
    """httpx over ASGI."""
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
async def admin(client):
    """The seeded admin's authorization headers."""
    return await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
async def alice(client, admin):
    """A regular user."""
    return await new_user(client, admin)


@pytest.fixture
async def bob(client, admin):
    """Another regular user."""
    return await new_user(client, admin)
