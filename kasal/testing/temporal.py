"""A real Temporal dev server for tests and benchmarks, and clients of it."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.client import Client

from kasal.client import EmbeddedTemporal, connect, ensure_search_attributes, free_port


async def start_server(data_dir: Path, *, push_cancels: bool = True) -> EmbeddedTemporal:
    """A dev server with SQLite persistence on free ports (headless: no Web UI), its own
    Prometheus metrics on one of them. ``push_cancels=False``: cancels ride on heartbeats,
    as on a server without worker commands."""
    return await EmbeddedTemporal(
        data_dir=data_dir,
        port=free_port(),
        ui_port=None,
        metrics_port=free_port(),
        push_cancels=push_cancels,
    ).start()


def unique_queue(prefix: str = "test") -> str:
    """A task queue nobody else uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def client_for(server: EmbeddedTemporal) -> Client:
    """A client with Kasal's data converter and search attributes registered."""
    client = await connect(server.address, server.namespace)
    await ensure_search_attributes(client)
    return client
