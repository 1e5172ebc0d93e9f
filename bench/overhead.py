"""What durability costs: a 10-task sequential crew, durable vs plain CrewAI vs bare Temporal.

    .venv/bin/python bench/overhead.py [--runs 7] [--tasks 10]

All three run in this process, in the same run, on the offline model (no network):

- ``kasal``: ``CrewWorkflow`` on the embedded Temporal dev server (SQLite, WAL), one activity
  per task, events and journal signalled, execution recorded in the app database;
- ``crewai``: the same agents and tasks, ``Crew(...).kickoff()`` in process, nothing durable;
- ``temporal``: a bare workflow running N no-op activities in sequence (the floor any
  Temporal-based design pays on this machine).

Prints the median wall time per task of each and the ratios, and for the two Temporal runs
the median WorkflowTaskScheduled -> WorkflowTaskStarted gap from their histories (the
server's dispatch time: ~35 ms when the dev server's transfer queue is rate-limited, ~3 ms
when not; see ``EmbeddedTemporal.command``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import WorkflowHandle  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from bench.bare_workflow import BareWorkflow, noop  # noqa: E402
from kasal.client import EmbeddedTemporal, connect, free_port, start_execution  # noqa: E402
from kasal.settings import Settings  # noqa: E402
from kasal.spec import CrewSpec  # noqa: E402


def crew_spec(tasks: int) -> CrewSpec:
    return CrewSpec.from_data(
        {
            "name": "bench",
            "agents": [
                {"name": "analyst", "role": "Analyst", "goal": "Analyse", "model": "offline/b"}
            ],
            "tasks": [
                {
                    "name": f"t{i}",
                    "description": f"Step {i} of the analysis",
                    "expected_output": "a line",
                    "agent": "analyst",
                }
                for i in range(tasks)
            ],
        }
    )


def plain_crewai(spec: CrewSpec) -> float:
    """One in-process CrewAI kickoff of the same crew; seconds."""
    from crewai import Agent, Crew, Process, Task

    from kasal.llm import OfflineLLM

    agent_spec = spec.agents[0]
    agent = Agent(
        role=agent_spec.role,
        goal=agent_spec.goal,
        backstory=agent_spec.role,
        llm=OfflineLLM(model=agent_spec.llm.model),
        verbose=False,
    )
    tasks = [
        Task(description=t.description, expected_output=t.expected_output, agent=agent)
        for t in spec.tasks
    ]
    started = time.perf_counter()
    Crew(agents=[agent], tasks=tasks, process=Process.sequential, verbose=False).kickoff()
    return time.perf_counter() - started


async def dispatch_gaps(handle: WorkflowHandle) -> list[float]:
    """ms from each WorkflowTaskScheduled to its WorkflowTaskStarted, from the history."""
    scheduled: dict[int, float] = {}
    gaps = []
    async for event in handle.fetch_history_events():
        at = event.event_time.ToMicroseconds() / 1000
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            scheduled[event.event_id] = at
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            attrs = event.workflow_task_started_event_attributes
            gaps.append(at - scheduled[attrs.scheduled_event_id])
    return gaps


async def main(runs: int, tasks: int) -> None:
    from activities.crewai_runtime import prepare_crewai
    from workflows.worker import run_worker, workflow_runner

    prepare_crewai()
    spec = crew_spec(tasks)
    with tempfile.TemporaryDirectory() as tmp:
        server = await EmbeddedTemporal(Path(tmp), port=free_port(), ui_port=None).start()
        try:
            client = await connect(server.address)
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            settings = Settings(
                data_dir=Path(tmp),
                temporal_address=server.address,
                task_queue=queue,
                database_url=f"sqlite+aiosqlite:///{tmp}/kasal.db",
            )
            stop, ready = asyncio.Event(), asyncio.Event()
            crew_worker = asyncio.create_task(
                run_worker(client, queue, stop=stop, ready=ready, settings=settings)
            )
            await ready.wait()
            bare_queue = queue + "-bare"
            bare = Worker(
                client,
                task_queue=bare_queue,
                workflows=[BareWorkflow],
                activities=[noop],
                workflow_runner=workflow_runner(),
            )
            results: dict[str, list[float]] = {"kasal": [], "crewai": [], "temporal": []}
            gaps: dict[str, list[float]] = {"kasal": [], "temporal": []}
            async with bare:
                # Warm-up: first workflow after a server start and first CrewAI build are
                # not steady state.
                await (await start_execution(client, spec, task_queue=queue)).result()
                await client.execute_workflow(
                    BareWorkflow.run, tasks, id=f"warm-{uuid.uuid4()}", task_queue=bare_queue
                )
                await asyncio.to_thread(plain_crewai, spec)
                for _ in range(runs):
                    started = time.perf_counter()
                    handle = await start_execution(client, spec, task_queue=queue)
                    await handle.result()
                    results["kasal"].append(time.perf_counter() - started)
                    wf = client.get_workflow_handle(handle.workflow_id)
                    gaps["kasal"] += await dispatch_gaps(wf)

                    started = time.perf_counter()
                    bare_handle = await client.start_workflow(
                        BareWorkflow.run, tasks, id=f"bare-{uuid.uuid4()}", task_queue=bare_queue
                    )
                    await bare_handle.result()
                    results["temporal"].append(time.perf_counter() - started)
                    gaps["temporal"] += await dispatch_gaps(bare_handle)

                    results["crewai"].append(await asyncio.to_thread(plain_crewai, spec))
            stop.set()
            await crew_worker
        finally:
            server.stop()

    per_task = {k: statistics.median(v) / tasks * 1000 for k, v in results.items()}
    print(f"{tasks}-task sequential crew, offline model, {runs} runs each (medians)")
    print(f"{'':<10}{'ms/task':>10}{'crew total ms':>16}{'wft sched->start ms':>22}")
    for name in ("crewai", "temporal", "kasal"):
        gap = f"{statistics.median(gaps[name]):>22.1f}" if name in gaps else ""
        print(f"{name:<10}{per_task[name]:>10.1f}{per_task[name] * tasks:>16.0f}{gap}")
    print(f"kasal / crewai   = {per_task['kasal'] / per_task['crewai']:.2f}x")
    print(f"kasal / temporal = {per_task['kasal'] / per_task['temporal']:.2f}x")
    print(
        f"durability overhead = {per_task['kasal'] - per_task['crewai']:.1f} ms/task "
        f"(bare Temporal floor {per_task['temporal']:.1f} ms/task)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.tasks))
