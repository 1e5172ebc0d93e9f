"""``kasal history export`` and ``kasal replay-history``: a recorded history replays on the
current code, and a changed copy of the workflow is caught, naming the task."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from kasal.client import start_execution
from kasal.settings import get_settings
from tests.helpers import crew

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "histories" / "sequential_context_tools.json"


async def test_export_then_replay_history_on_the_current_code(
    temporal_client, temporal_server, task_queue, worker, tmp_path, monkeypatch
):
    spec = crew([{"name": "draft", "description": "Draft"}, {"name": "edit", "description": "E"}])
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    await handle.result()
    monkeypatch.setenv("KASAL_TEMPORAL_ADDRESS", temporal_server.address)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        # In a thread: the command runs its own event loop, as it does in a terminal.
        exported = await asyncio.to_thread(runner.invoke, app, ["history", "export", handle.id])
    finally:
        get_settings.cache_clear()
    assert exported.exit_code == 0, exported.output
    path = tmp_path / "h.json"
    path.write_text(exported.stdout)
    checked = await asyncio.to_thread(runner.invoke, app, ["replay-history", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "compatible" in checked.stdout and "NOT" not in checked.stdout


def changed_checkout(tmp_path: Path) -> Path:
    """A copy of the workflows package where the first run of a task gets a new activity id:
    the kind of change that breaks running executions."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "workflows", copy / "workflows")
    source = copy / "workflows" / "crew_workflow.py"
    text = source.read_text()
    old = 'activity_id=task.name if run == 1 else f"{task.name}#{run}"'
    assert old in text
    source.write_text(text.replace(old, 'activity_id=f"{task.name}-v2" if run == 1 else task.name'))
    return copy


def kasal(args: list[str], pythonpath: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        env={**os.environ, "PYTHONPATH": pythonpath, "NO_COLOR": "1", "COLUMNS": "200"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_history_passes_on_the_recorded_history_and_names_the_task_on_a_change(tmp_path):
    passed = kasal(["replay-history", str(RECORDED)], str(ROOT), ROOT)
    assert passed.returncode == 0, passed.stderr
    assert "compatible" in passed.stdout

    copy = changed_checkout(tmp_path)
    failed = kasal(["replay-history", str(RECORDED), "--json"], f"{copy}:{ROOT}", copy)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    verdict = json.loads(failed.stdout)
    assert verdict["compatible"] is False
    # The first task of the recorded crew, its activity in history and the new command.
    assert verdict["task"] == "gather" and verdict["activity_id"] == "gather", verdict
    assert verdict["command"] == "gather-v2" and verdict["event_type"] == "ActivityTaskScheduled"
    assert "Nondeterminism" in verdict["message"]
    human = kasal(["replay-history", str(RECORDED)], f"{copy}:{ROOT}", copy)
    assert human.returncode == 1 and "task 'gather'" in human.stderr
