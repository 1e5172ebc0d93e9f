"""The embedded dev server's own metrics: what bench/load.py counts the server's work by."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from kasal.client import EmbeddedTemporal, free_port


async def _counted(port: int, operation: str, family: str = "service_requests") -> float:
    """What the server's metrics count for ``operation``: its frontend's requests, or (with
    ``family="persistence_requests"``) its database requests."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        sample.value
        for metrics in text_string_to_metric_families(text)
        if metrics.name == family
        for sample in metrics.samples
        if sample.labels.get("operation") == operation
        and (family != "service_requests" or sample.labels.get("service_name") == "frontend")
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


@workflow.defn(sandboxed=False)
class _ScheduleOne:
    @workflow.run
    async def run(self, data: str) -> int:
        return await workflow.execute_activity(
            _measure, data, start_to_close_timeout=timedelta(seconds=30)
        )


@activity.defn
async def _measure(data: str) -> int:
    return len(data)


async def _reads_to_finish(client: Client, port: int, batch: str, size: int) -> float:
    """History reads the server makes while 40 workflows, each with one activity scheduled
    (input of ``size`` characters) and not yet started, start it and finish."""
    queue = f"events-cache-{batch}"
    async with Worker(client, task_queue=queue, workflows=[_ScheduleOne]):
        handles = [
            await client.start_workflow(
                _ScheduleOne.run, "x" * size, id=f"{batch}-{n}", task_queue=queue
            )
            for n in range(40)
        ]
        for handle in handles:  # each has its activity scheduled, none started
            for _ in range(100):
                if (await handle.describe()).raw_description.pending_activities:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{handle.id} never scheduled its activity")
        await asyncio.sleep(2)  # the server reports its metrics about once a second
        before = await _counted(port, "ReadHistoryBranch", "persistence_requests")
        async with Worker(client, task_queue=queue, activities=[_measure]):
            assert await asyncio.gather(*(h.result() for h in handles)) == [size] * 40
        await asyncio.sleep(2)
        return await _counted(port, "ReadHistoryBranch", "persistence_requests") - before


async def test_pending_activities_start_from_the_events_cache_not_the_database(tmp_path):
    """40 activities scheduled with 64 kB inputs (2.5 MB, five times the dev server's default
    events cache) start as those with 8-byte inputs do: without reading their scheduled
    events back from the database (with the default cache: 120 reads against 80)."""
    server = await EmbeddedTemporal(
        tmp_path, port=free_port(), ui_port=None, metrics_port=free_port()
    ).start()
    try:
        assert server.metrics_port
        client = await Client.connect(server.address)
        small = await _reads_to_finish(client, server.metrics_port, "small", 8)
        large = await _reads_to_finish(client, server.metrics_port, "large", 65536)
    finally:
        server.stop()
    assert large <= small + 4, f"{large:.0f} history reads with large inputs, {small:.0f} small"
