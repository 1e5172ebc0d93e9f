"""A CrewAI project served by a separate ``kasal worker --project DIR``, started through the
API by name, SIGKILLed mid-task and resumed with the journal to a valid Pydantic output."""

from __future__ import annotations

import asyncio

import pytest

from kasal.settings import get_settings
from tests.fixtures.api import wait_for_status
from tests.fixtures.crewai_project import make_project
from tests.fixtures.worker_process import WorkerProcess, wait_until


@pytest.fixture
def offline(monkeypatch):
    """KASAL_OFFLINE=1 for the API process: it decides the models of what it starts."""
    monkeypatch.setenv("KASAL_OFFLINE", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_a_project_worker_serves_the_api_and_resumes_after_sigkill(
    temporal_server, api_settings, client, alice, offline, tmp_path
):
    root = make_project(tmp_path / "projects")
    marker = tmp_path / "guardrail-rejecting"
    env = {
        "KASAL_DATABASE_URL": api_settings.database_url,
        "KASAL_FILES_DIR": str(tmp_path / "files"),
        "KASAL_OFFLINE": "1",
    }
    args = ("--project", str(root))
    address, queue = temporal_server.address, api_settings.task_queue
    first = WorkerProcess(
        address,
        queue,
        tmp_path / "w1",
        *args,
        **env,
        PROJECT_GUARDRAIL_MARKER=str(marker),
        PROJECT_GUARDRAIL_SLEEP="120",
    )
    second = WorkerProcess(address, queue, tmp_path / "w2", *args, **env)
    await asyncio.to_thread(first.start)
    try:
        listed = await client.get("/api/v1/projects", headers=alice)
        assert listed.status_code == 200, listed.text
        project = next(p for p in listed.json() if p["name"] == root.name)
        assert project["tasks"] == ["research_task", "reporting_task"]
        assert project["planning"] is True and project["default_inputs"]["topic"] == "AI LLMs"
        assert set(project["placeholders"]) == {"topic", "current_year"}

        started = await client.post(
            "/api/v1/executions",
            json={"project": root.name, "inputs": {"topic": "tea", "current_year": "2026"}},
            headers=alice,
        )
        assert started.status_code == 202, started.text
        execution_id = started.json()["execution_id"]
        # The project's guardrail rejects the first answer: kill the worker right there.
        await asyncio.to_thread(wait_until, marker.exists, 90)
        first.kill()
        await asyncio.to_thread(second.start)
        body = await wait_for_status(client, alice, execution_id, {"completed"}, timeout=90)
        assert body["json"] is not None  # the status carries the structured output
        result = await client.get(f"/api/v1/executions/{execution_id}/result", headers=alice)
        trace = await client.get(f"/api/v1/traces/{execution_id}?limit=1000", headers=alice)
    finally:
        first.kill()
        second.stop()
    assert result.status_code == 200, result.text
    out = result.json()
    report = out["json"]
    # A valid Report (the project's Pydantic class): title, points, score in 1..10.
    assert set(report) == {"title", "points", "score"} and 1 <= report["score"] <= 10
    reporting = out["tasks"][1]
    assert reporting["output_format"] == "pydantic" and reporting["json_dict"] == report
    assert reporting["attempts"] == 2
    assert trace.status_code == 200, trace.text
    events = trace.json()["events"]
    done = next(
        e for e in events if e["event"] == "task_completed" and e["task"] == "reporting_task"
    )
    # The answer paid for before the crash came from the journal; the redo was paid.
    assert done["data"]["replayed_calls"] >= 1 and done["data"]["llm_calls"] >= 1
    assert sum(1 for e in events if e["event"] == "planning_completed") == 1
    assert (tmp_path / "files" / "reports" / "tea.json").is_file()
