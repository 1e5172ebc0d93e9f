"""``kasal run`` prompting for human input, ``kasal feedback`` and ``kasal schedule``, as
subprocesses against the session's Temporal server and a worker in the test process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from kasal.client import ExecutionHandle, start_execution
from kasal.constants import WAITING_QUERY
from kasal.execution import WaitingTask
from tests.fixtures.api import offline_spec
from tests.helpers import crew

ROOT = Path(__file__).resolve().parents[2]


def kasal(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KASAL_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=environment,
        cwd=ROOT,
        timeout=timeout,
    )


def env_for(temporal_server, task_queue, tmp_path) -> dict[str, str]:
    return {
        "KASAL_TEMPORAL_ADDRESS": temporal_server.address,
        "KASAL_TASK_QUEUE": task_queue,
        "KASAL_DATA_DIR": str(tmp_path / "cli"),
        "KASAL_OWNER": "ops-person",
    }


async def test_kasal_run_prompts_in_the_terminal(tmp_path, temporal_server, task_queue, worker):
    spec_file = tmp_path / "crew.yaml"
    spec_file.write_text(yaml.safe_dump(offline_spec("reviewed", tasks=1, human_input=True)))
    done = await asyncio.to_thread(
        kasal,
        "run",
        str(spec_file),
        "--prompt",
        "--json",
        env=env_for(temporal_server, task_queue, tmp_path),
        stdin="make it shorter\n\n",  # feedback first, then approve the rerun
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert done.stderr.count("waits for your review") == 2
    assert "sent: the task runs again" in done.stderr and "approved" in done.stderr


async def waiting(handle: ExecutionHandle, count: int = 1) -> list[WaitingTask]:
    for _ in range(300):
        found = await handle._handle.query(WAITING_QUERY, result_type=list[WaitingTask])
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("no task waits")


async def test_kasal_feedback_answers_a_waiting_task(
    tmp_path, temporal_server, temporal_client, task_queue, worker
):
    spec = crew(
        [{"name": "draft", "description": "Draft it", "human_input": True}],
        agents=[{"name": "analyst", "role": "A", "goal": "g", "llm": "offline/x"}],
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    first = await waiting(handle)
    env = env_for(temporal_server, task_queue, tmp_path)
    sent = await asyncio.to_thread(kasal, "feedback", handle.id, "--feedback", "more", env=env)
    assert sent.returncode == 0, sent.stderr
    assert "draft: sent feedback" in sent.stdout
    for _ in range(300):
        again = await waiting(handle)
        if again[0].since > first[0].since:
            break
        await asyncio.sleep(0.1)
    shown = await asyncio.to_thread(kasal, "feedback", handle.id, env=env, stdin="\n")
    assert shown.returncode == 0, shown.stderr
    assert "draft: approved" in shown.stdout and "waits for your review" in shown.stdout
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.tasks[0].attempts == 2
    refused = await asyncio.to_thread(kasal, "feedback", handle.id, "--approve", env=env)
    assert refused.returncode != 0


async def test_kasal_schedule_from_the_command_line(tmp_path, temporal_server, task_queue, worker):
    env = env_for(temporal_server, task_queue, tmp_path)
    spec_file = tmp_path / "crew.yaml"
    spec_file.write_text(yaml.safe_dump(offline_spec("cli-scheduled", tasks=1)))
    made = await asyncio.to_thread(
        kasal, "schedule", "create", str(spec_file), "--every", "3600", "--paused", env=env
    )
    assert made.returncode == 0, made.stderr
    schedule_id = made.stdout.strip()
    listed = await asyncio.to_thread(kasal, "schedule", "list", env=env)
    assert schedule_id in listed.stdout.split()
    assert (
        await asyncio.to_thread(kasal, "schedule", "trigger", schedule_id, env=env)
    ).returncode == 0
    for _ in range(100):
        shown = await asyncio.to_thread(kasal, "schedule", "show", schedule_id, env=env)
        view = json.loads(shown.stdout)
        if view["total_runs"] == 1:
            break
    assert view["paused"] is True and view["timetable"]["interval_seconds"] == [3600.0]
    assert view["total_runs"] == 1
    assert (
        await asyncio.to_thread(kasal, "schedule", "delete", schedule_id, env=env)
    ).returncode == 0
    gone = await asyncio.to_thread(kasal, "schedule", "show", schedule_id, env=env)
    assert gone.returncode == 2 and "not found" in gone.stderr
