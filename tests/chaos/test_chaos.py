"""Chaos: workers SIGKILLed at random moments, Temporal restarted; every crew still finishes,
and no finished LLM call is ever paid for twice."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from kasal.client import EmbeddedTemporal, connect, free_port, start_execution
from kasal.settings import Settings
from tests.fixtures.llm_stub import ModelBehaviour
from tests.fixtures.temporal import running_worker, unique_queue
from tests.fixtures.worker_process import WorkerProcess
from tests.helpers import crew, stub_agent

TASKS = 6
EXECUTIONS = 10
KILLS = 5


def chaos_crew(base_url: str):
    return crew(
        [{"name": f"t{n}", "description": f"Step {n} of job {{job}}"} for n in range(1, TASKS + 1)],
        agents=[stub_agent("chaos", base_url)],
        timeout={"start_to_close": 120, "heartbeat": 2},
        retry={"maximum_attempts": 20, "initial_interval": 0.2, "maximum_interval": 2},
    )


async def test_random_sigkills_lose_nothing_and_repeat_only_calls_in_flight(
    temporal_server, temporal_client, llm_stub, tmp_path
):
    rng = random.Random(20261125)
    # Each task: one calculator step, then the answer (two LLM calls, journaled). At 0.3 s a
    # call, 78 of the 120 calls had been answered at the fifth kill (at 0.15 s, a fast machine
    # finished every crew before it): each kill still lands on running crews.
    llm_stub.behaviours["chaos"] = ModelBehaviour(tool_steps=1, latency=0.3)
    queue = unique_queue("chaos")
    spec = chaos_crew(llm_stub.base_url)
    worker = WorkerProcess(temporal_server.address, queue, tmp_path / "w0")
    await asyncio.to_thread(worker.start)
    handles = [
        await start_execution(temporal_client, spec, {"job": job}, task_queue=queue)
        for job in range(EXECUTIONS)
    ]
    results = asyncio.gather(*(h.result() for h in handles))
    exposed = 0  # calls in flight (or answered but maybe not yet journaled) at each kill
    kills = 0
    try:
        while kills < KILLS:
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            if results.done():
                break
            worker.kill()
            killed_at = time.monotonic()
            kills += 1
            with llm_stub.lock:
                exposed += sum(
                    1
                    for r in llm_stub.requests
                    # In flight, or answered so recently that its journal signal may not
                    # have landed yet (that takes milliseconds; 0.3 s is generous).
                    if r.answered_at is None or killed_at - r.answered_at < 0.3
                )
            worker = WorkerProcess(temporal_server.address, queue, tmp_path / f"w{kills}")
            await asyncio.to_thread(worker.start)
        outputs = await asyncio.wait_for(results, 300)
        streams = [[e async for e in h.events()] for h in handles]  # needs a live worker
    finally:
        worker.stop()

    assert kills >= KILLS, "the crews finished before the chaos did: make them longer"
    requests = llm_stub.requests_for("chaos")
    counts = Counter(r.prompt for r in requests)
    repeated = sum(n - 1 for n in counts.values())
    assert repeated <= exposed, f"{repeated} repeated calls, only {exposed} were exposed"
    answers = {r.prompt: r.answer for r in requests}
    for job, result in enumerate(outputs):
        assert [t.name for t in result.tasks] == [f"t{n}" for n in range(1, TASKS + 1)]
        assert f"Step 1 of job {job}" in next(
            p for p in counts if result.tasks[0].raw in answers[p]
        )
        for task in result.tasks:
            assert task.raw.startswith("chaos says ")
    for events in streams:  # the event streams survived the kills intact
        assert [e.offset for e in events] == list(range(len(events)))
        done = [e.task for e in events if e.type == "task_completed"]
        assert done == [f"t{n}" for n in range(1, TASKS + 1)]
        assert events[-1].type == "execution_completed"
    # Each task made exactly 2 distinct calls: nothing extra was paid beyond repeats.
    assert len(counts) == EXECUTIONS * TASKS * 2


async def test_restarting_temporal_mid_execution(tmp_path, llm_stub):
    """The dev server goes down and comes back on the same SQLite file: the crew finishes."""
    port = free_port()
    server = await EmbeddedTemporal(tmp_path / "t", port=port, ui_port=None).start()
    llm_stub.behaviours["steady"] = ModelBehaviour(latency=1.0)
    spec = crew(
        [{"name": f"t{n}", "description": f"Part {n}"} for n in range(1, 5)],
        agents=[{**stub_agent("steady", llm_stub.base_url), "tools": []}],
        timeout={"start_to_close": 60, "heartbeat": 5},
    )
    queue = unique_queue("restart")
    try:
        client = await connect(server.address)
        settings = Settings(
            data_dir=tmp_path / "kasal",
            temporal_address=server.address,
            task_queue=queue,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'kasal.db'}",
        )
        async with running_worker(client, queue, settings):
            handle = await start_execution(client, spec, task_queue=queue)
            await asyncio.sleep(1.5)  # in the middle of the crew
            server.stop()
            await asyncio.sleep(1.0)
            server = await EmbeddedTemporal(tmp_path / "t", port=port, ui_port=None).start()
            result = await asyncio.wait_for(handle.result(), 120)
    finally:
        server.stop()
    assert [t.name for t in result.tasks] == ["t1", "t2", "t3", "t4"]
    prompts = Counter(r.prompt for r in llm_stub.requests_for("steady"))
    assert len(prompts) == 4
    # At most the call in flight while the server was away is made again.
    assert sum(prompts.values()) <= 5
