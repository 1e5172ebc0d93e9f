"""The runtime's rule on the embedded default: crews started by a process with its own
worker run on that worker only, even when the embedded port already has a server with
other workers on it (tool instances registered in-process exist nowhere else)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from crewai.tools import BaseTool

from kasal import Agent, Crew, Task
from kasal import crew as crew_module
from kasal.client import Runtime
from kasal.settings import Settings
from tests.fixtures.worker_process import WorkerProcess


class _Echo(BaseTool):
    name: str = "echo"
    description: str = "Repeat the input."

    def _run(self, text: str = "") -> str:
        return text


def embedded_settings(tmp_path, temporal_server, task_queue) -> Settings:
    """The embedded default, pointed at a port where a server already runs."""
    return Settings(
        data_dir=tmp_path / "kasal",
        temporal_address="",
        embedded_port=temporal_server.port,
        embedded_ui_port=0,
        task_queue=task_queue,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'kasal.db'}",
    )


async def test_a_facade_on_an_adopted_server_never_runs_on_other_workers(
    tmp_path, temporal_server, temporal_client, task_queue, caplog
):
    settings = embedded_settings(tmp_path, temporal_server, task_queue)
    # Another process's worker on the shared queue: it knows nothing of this process's tool.
    other = WorkerProcess(temporal_server.address, task_queue, tmp_path / "other")
    await asyncio.to_thread(other.start)
    tool = _Echo(name=f"local_echo_{uuid.uuid4().hex[:8]}")
    agent = Agent(role="Analyst", goal="Analyse", model="offline/analyst", tools=[tool])
    crew = Crew(
        agents=[agent],
        tasks=[Task(description="Say {word}", expected_output="A word", agent=agent)],
        name="local-tools",
        settings=settings,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="kasal.client"):
            # Several runs: on a shared queue about half would land on the other worker.
            for n in range(4):
                result = await asyncio.to_thread(crew.kickoff, {"word": f"w{n}"})
                assert f"w{n}" in result.raw
        runtime = crew_module._backgrounds[id(settings)].runtime
        assert runtime.adopted_server
        assert runtime.task_queue != task_queue and runtime.task_queue.startswith(task_queue)
        execution = await asyncio.to_thread(crew.start, {"word": "x"})
        await asyncio.to_thread(execution.result, 60)
        described = await temporal_client.get_workflow_handle(execution.workflow_id).describe()
        assert described.task_queue == runtime.task_queue
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "already running" in said and runtime.task_queue in said  # and it says so
    finally:
        background = crew_module._backgrounds.pop(id(settings), None)
        if background is not None:
            await asyncio.to_thread(background.close)
        other.stop()


async def test_describe_names_the_server_and_the_workers(tmp_path, temporal_server, task_queue):
    settings = embedded_settings(tmp_path, temporal_server, task_queue)
    async with Runtime(settings, in_process_worker=False) as detached:
        assert detached.adopted_server and detached.task_queue == task_queue
        where, workers = detached.describe()
        assert temporal_server.address in where and "not started by this process" in where
        assert "none in this process" in workers and task_queue in workers
    shared = Runtime(settings, in_process_worker=True, private_queue=False)
    assert shared.task_queue == task_queue  # `kasal dev`: serves the shared queue
    configured = Runtime(settings.model_copy(update={"temporal_address": "h:1"}))
    assert configured.task_queue == task_queue and not configured.in_process_worker
