"""API fixtures for the replay and debugging tests (the same as tests/api's)."""

from tests.api.conftest import admin, alice, api_settings, app, client  # noqa: F401
