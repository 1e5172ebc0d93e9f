"""The Kasal documentation's own snippets run as written."""

from __future__ import annotations

import asyncio

import pytest

from kasal import Agent, Crew, Task
from kasal.exceptions import AgentExecutionError, KasalError, TaskTimeoutError
from kasal.settings import get_settings


@pytest.fixture
def offline_settings(settings):
    """``KASAL_OFFLINE=1``: the docs' ``model="gpt-4"`` agents run with no key, no network."""
    return settings.model_copy(update={"offline": True})


async def test_the_quickstart_snippet(offline_settings, worker):
    researcher = Agent("Researcher", "Find facts about {topic}", "Curious", model="gpt-4")
    task = Task(description="Find three facts about {topic}", agent=researcher)
    crew = Crew(agents=[researcher], tasks=[task], settings=offline_settings)
    # Plain code: kickoff() blocks and returns the result.
    result = await asyncio.to_thread(crew.kickoff, {"topic": "tea"})
    assert "tea" in result.raw and result.tasks_output[0].agent == "Researcher"
    assert crew.spec.agents[0].llm.model == "openai/gpt-4"  # what it runs when not offline
    # Async code: the same call is awaited.
    again = await crew.kickoff(inputs={"topic": "coffee"})
    assert "coffee" in again.raw
    # CrewAI's kickoff_for_each: one durable execution per inputs.
    each = await asyncio.to_thread(crew.kickoff_for_each, [{"topic": "a"}, {"topic": "b"}])
    assert len({r.execution_id for r in each}) == 2 and "b" in each[1].raw
    both = await crew.kickoff_for_each_async([{"topic": "c"}, {"topic": "d"}])
    assert [("c" in both[0].raw), ("d" in both[1].raw)] == [True, True]


async def test_agent_execute_returns_a_result_with_success(offline_settings, worker):
    agent = Agent("Researcher", "Answer", "Helpful", model="gpt-4")
    result = await agent.execute("Test task", settings=offline_settings)
    assert result.success is True and "Test task" in result.output


async def test_exceptions_are_raised_where_those_things_happen(settings, worker, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # An agent that cannot run (no key for its model, and offline not asked for).
    agent = Agent("Researcher", "Answer", "Helpful", model="gpt-4")
    with pytest.raises(AgentExecutionError, match="OPENAI_API_KEY") as failed:
        await agent.execute("Test task", settings=settings)
    assert isinstance(failed.value, KasalError)
    # A task past its agent's max_execution_time.
    slow = Agent(
        "Slow",
        "Think",
        "b",
        llm={"model": "offline/slow", "options": {"latency_ms": 3000}},
        max_execution_time=1,
    )
    crew = Crew(
        agents=[slow],
        tasks=[Task(description="Think hard", agent=slow, retry={"maximum_attempts": 1})],
        settings=settings,
    )
    with pytest.raises(TaskTimeoutError, match="timed out") as timed_out:
        await crew.kickoff_async()
    assert isinstance(timed_out.value, AgentExecutionError)


async def test_a_crewai_project_from_python(offline_settings, worker, tmp_path, monkeypatch):
    from tests.fixtures.crewai_project import make_project

    monkeypatch.setenv("KASAL_FILES_DIR", str(tmp_path / "files"))
    get_settings.cache_clear()  # the worker writes output files where the settings say
    root = make_project(tmp_path / "projects")
    crew = Crew.from_project(root, settings=offline_settings)
    result = await crew.kickoff(inputs={"topic": "tea", "current_year": "2026"})
    # The project's own Pydantic class, rebuilt from the durable result.
    assert type(result.pydantic).__name__ == "Report" and 1 <= result.pydantic.score <= 10
    assert type(result.pydantic).__module__ == f"{root.name}.crew"
    assert [t.name for t in result.tasks_output] == ["research_task", "reporting_task"]
    assert (tmp_path / "files" / "reports" / "tea.json").is_file()
    get_settings.cache_clear()
