"""The embedded dev server's own metrics: what bench/load.py counts the server's work by."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def _counted(port: int, operation: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "service_requests"
        for sample in family.samples
        if sample.labels.get("operation") == operation
        and sample.labels.get("service_name") == "frontend"
    )


async def test_the_embedded_server_counts_its_requests_on_its_metrics_port(
    temporal_server, temporal_client
):
    assert temporal_server.metrics_port
    before = await _counted(temporal_server.metrics_port, "CountWorkflowExecutions")
    for _ in range(3):
        await temporal_client.count_workflows()
    for _ in range(50):  # the server reports its metrics about once a second
        if await _counted(temporal_server.metrics_port, "CountWorkflowExecutions") >= before + 3:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the server's metrics never counted the three requests")


async def test_the_embedded_server_pushes_cancels_and_a_failed_probe_says_it_does_not(
    temporal_client, heartbeat_cancel_client
):
    """The embedded server turns on worker commands (a worker then heartbeats only for
    liveness); a server without them, or one that cannot be asked, gets heartbeat-carried
    cancels, and the probe never raises (it must not fail a task)."""
    from kasal.client import pushes_activity_cancels

    assert await pushes_activity_cancels(temporal_client) is True
    assert await pushes_activity_cancels(heartbeat_cancel_client) is False
    assert await pushes_activity_cancels(temporal_client, namespace="no-such-namespace") is False
