"""What a worker keeps in memory per running execution: its knob, and executions that do
not fit in it still finish (evicted, then replayed from their history)."""

from __future__ import annotations

import asyncio

from kasal.client import start_execution
from tests.helpers import crew, offline_agent
from workflows.worker import running_worker


async def test_more_running_executions_than_cached_workflows_all_finish(
    temporal_client, task_queue, settings
):
    small = settings.model_copy(update={"max_cached_workflows": 2})
    slow = offline_agent("offline/slow", latency_ms=300)
    spec = crew([{"name": f"t{i}", "description": f"Step {i}"} for i in range(3)], agents=[slow])
    async with running_worker(temporal_client, task_queue, small):
        handles = [
            await start_execution(temporal_client, spec, task_queue=task_queue) for _ in range(6)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    assert all(len(r.tasks) == 3 and not r.stopped for r in results)


async def test_the_scale_settings_reach_the_worker(temporal_client, task_queue, settings):
    """The heartbeat throttle, the heartbeat budget, whether cancels are pushed, the compute
    slots, the admission and the workflow-task slots of a worker are the ones its settings
    give."""
    from kasal.db.engine import create_engine, session_factory
    from workflows.worker import build_worker

    tuned = settings.model_copy(
        update={
            "heartbeat_throttle_seconds": 7.0,
            "heartbeats_per_second": 12.0,
            "cancel_push": False,
            "compute_slots": 3,
            "compute_backlog": 9,
            "max_concurrent_activities": 40,
            "max_concurrent_workflow_tasks": 7,
        }
    )
    engine = create_engine(tuned.resolved_database_url())
    try:
        worker = build_worker(temporal_client, task_queue, session_factory(engine), settings=tuned)
        config = worker.config()
        assert config["max_heartbeat_throttle_interval"].total_seconds() == 7.0
        crew_activities = config["activities"][0].__self__
        assert crew_activities._watch.heartbeats_per_second == 12.0
        # Told, the worker never asks the server (outside an activity, asking would raise).
        assert await crew_activities._watch.pushes_cancels() is False
        assert crew_activities._slots._free == 3
        admission = config["tuner"]._get_activity_task_slot_supplier()
        assert (admission.maximum, admission.backlog) == (40, 9)
        assert admission._slots is crew_activities._slots
        assert config["tuner"]._get_workflow_task_slot_supplier().num_slots == 7
    finally:
        await engine.dispose()


async def test_a_worker_tidies_its_heap_while_it_runs_and_not_after(
    temporal_client, task_queue, settings, monkeypatch
):
    """The worker that settles the process's heap also tidies it when quiet, until it stops."""
    import kasal.heap

    seen: list[str] = []

    async def tidy() -> None:
        seen.append("tidying")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("stopped")
            raise

    monkeypatch.setattr(kasal.heap, "tidy_when_quiet", tidy)
    monkeypatch.setattr(kasal.heap, "settle", lambda threshold: True)
    async with running_worker(temporal_client, task_queue, settings):
        assert seen == ["tidying"]
    await asyncio.sleep(0)
    assert seen == ["tidying", "stopped"]
    # A process settled already (another worker in it) leaves the tidying to that one.
    seen.clear()
    monkeypatch.setattr(kasal.heap, "settle", lambda threshold: False)
    async with running_worker(temporal_client, task_queue, settings):
        pass
    assert seen == []
