"""``from kasal import Agent, Task, Crew``: written as in CrewAI, run as a Temporal workflow."""

from __future__ import annotations

import asyncio
import os

import pytest

from kasal import Agent, Crew, Task
from kasal.exceptions import ExecutionCancelledError, InvalidSpecError
from kasal.execution import EventType, ExecutionState


def build(settings, **agent):
    researcher = Agent(
        role="Research Analyst",
        goal="Find market insights",
        backstory="Careful.",
        model="offline/analyst",
        tools=["calculator"],
        **agent,
    )
    writer = Agent(role="Writer", goal="Write", model="offline/writer")
    research = Task(
        description="Analyze competitor pricing for {product}",
        expected_output="A short report",
        agent=researcher,
    )
    brief = Task(description="Write the brief", expected_output="Prose", agent=writer)
    review = Task(description="Review", expected_output="Notes", agent=writer, context=[research])
    return Crew(
        agents=[researcher, writer],
        tasks=[research, brief, review],
        name="facade",
        settings=settings,
    )


def test_the_facade_builds_one_spec():
    crew = build(None)
    spec = crew.spec
    assert [a.name for a in spec.agents] == ["research_analyst", "writer"]
    assert spec.agents[0].llm.model == "offline/analyst" and spec.agents[0].tools == ["calculator"]
    assert [t.name for t in spec.tasks] == ["task_1", "task_2", "task_3"]
    assert spec.tasks[2].context == ["task_1"] and spec.tasks[1].context is None
    assert spec.placeholders() == {"product"}
    # As in CrewAI, a model with no provider is OpenAI's.
    assert Agent(role="X", goal="Y", model="gpt-4o").spec.llm.model == "openai/gpt-4o"
    with pytest.raises(InvalidSpecError, match="provider"):
        Agent(role="X", goal="Y", model="/gpt-4o")


async def test_kickoff_runs_the_crew_durably(settings, worker):
    crew = build(settings)
    # kickoff is synchronous, as in CrewAI: run it off this test's event loop (the worker's).
    result = await asyncio.to_thread(crew.kickoff, {"product": "coffee"})
    assert [t.name for t in result.tasks] == ["task_1", "task_2", "task_3"]
    assert "coffee" in result.tasks[0].raw
    assert result.raw == result.tasks[-1].raw == str(result)
    with pytest.raises(InvalidSpecError, match="product"):
        await asyncio.to_thread(crew.kickoff, {})


async def test_start_gives_a_handle_with_status_events_and_cancel(settings, worker):
    slow = build(settings, llm={"model": "offline/slow", "options": {"latency_ms": 30_000}})
    execution = await asyncio.to_thread(slow.start, {"product": "tea"})
    assert execution.workflow_id == f"kasal-exec-{execution.id}"

    def first_task_started():
        for event in execution.events():
            if event.type == EventType.TASK_STARTED:
                return event

    started = await asyncio.to_thread(first_task_started)
    assert started.task == "task_1" and started.offset == 1
    status = await asyncio.to_thread(execution.status)
    assert status.state == ExecutionState.RUNNING
    await asyncio.to_thread(execution.cancel)
    with pytest.raises(ExecutionCancelledError):
        await asyncio.to_thread(execution.result, 30)
    kinds = await asyncio.to_thread(lambda: [e.type for e in execution.events()])
    assert kinds[-1] == EventType.EXECUTION_CANCELLED


async def test_facade_runs_carry_the_owner_search_attribute(settings, worker, temporal_client):
    """``KasalOwner`` is the OS user (or KASAL_OWNER) for runs started outside the API."""
    import getpass

    from temporalio.common import SearchAttributeKey

    from kasal.constants import SA_OWNER

    assert settings.owner == os.environ.get("KASAL_OWNER", getpass.getuser())
    crew = build(settings)
    execution = await asyncio.to_thread(crew.start, {"product": "tea"})
    await asyncio.to_thread(execution.result, 60)
    described = await temporal_client.get_workflow_handle(execution.workflow_id).describe()
    owner = described.typed_search_attributes.get(SearchAttributeKey.for_keyword(SA_OWNER))
    assert owner == settings.owner

    alice = build(settings.model_copy(update={"owner": "alice"}))
    execution = await asyncio.to_thread(alice.start, {"product": "tea"})
    await asyncio.to_thread(execution.result, 60)
    described = await temporal_client.get_workflow_handle(execution.workflow_id).describe()
    assert described.typed_search_attributes.get(SearchAttributeKey.for_keyword(SA_OWNER)) == (
        "alice"
    )
