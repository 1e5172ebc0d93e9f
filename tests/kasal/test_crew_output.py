"""The facade's result passes the assertions a CrewAI ``CrewOutput`` passes: written against
plain CrewAI first (same offline model, no network), then run on Kasal's durable result."""

from __future__ import annotations

import asyncio
import json

from crewai import Agent as CrewAIAgent
from crewai import Crew as CrewAICrew
from crewai import Task as CrewAITask
from crewai.crews.crew_output import CrewOutput as CrewAIOutput
from crewai.tasks.output_format import OutputFormat
from crewai.tasks.task_output import TaskOutput
from crewai.types.usage_metrics import UsageMetrics
from pydantic import BaseModel

from kasal import Agent, Crew, Task
from kasal.llm import OfflineLLM


class Verdict(BaseModel):
    ok: bool
    reasons: list[str]


FACTS = "List three facts about {topic}"
JUDGE = "Judge the facts about {topic}"


def assert_crew_output(out, structured: str) -> None:
    """What code written against CrewAI's ``CrewOutput`` relies on."""
    assert isinstance(out, CrewAIOutput)
    assert [t.name for t in out.tasks_output] == ["facts", "verdict"]
    first, last = out.tasks_output
    for task in out.tasks_output:
        assert isinstance(task, TaskOutput)
        assert task.agent == "Analyst"
        assert task.summary == " ".join(task.description.split(" ")[:10]) + "..."
    assert first.description == "List three facts about tea"
    assert first.expected_output == "three facts"
    assert first.output_format == OutputFormat.RAW and first.pydantic is None
    assert first.json_dict is None and str(first) == first.raw and first.raw
    assert out.raw == last.raw
    if structured == "pydantic":
        assert last.output_format == OutputFormat.PYDANTIC
        assert isinstance(out.pydantic, Verdict) and out.pydantic == last.pydantic
        assert out.json_dict is None
        assert out.to_dict() == out.pydantic.model_dump()
        assert str(out) == str(out.pydantic)
        assert out["ok"] is out.pydantic.ok
    else:
        assert last.output_format == OutputFormat.JSON
        assert out.pydantic is None and isinstance(out.json_dict, dict)
        assert Verdict.model_validate(out.json_dict)
        assert out.to_dict() == out.json_dict == json.loads(out.json or "")
        assert str(out) == str(out.json_dict)
        assert out["reasons"] == out.json_dict["reasons"]
    usage = out.token_usage
    assert isinstance(usage, UsageMetrics)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    assert usage.successful_requests >= 2
    assert out.usage_metrics == usage.model_dump()


def plain_crewai(structured: str) -> CrewAIOutput:
    agent = CrewAIAgent(
        role="Analyst", goal="Analyse", backstory="b", llm=OfflineLLM(model="offline/parity")
    )
    facts = CrewAITask(description=FACTS, expected_output="three facts", agent=agent, name="facts")
    verdict = CrewAITask(
        description=JUDGE,
        expected_output="a verdict",
        agent=agent,
        name="verdict",
        **{f"output_{structured}": Verdict},  # type: ignore[arg-type]
    )
    output = CrewAICrew(agents=[agent], tasks=[facts, verdict]).kickoff(inputs={"topic": "tea"})
    assert isinstance(output, CrewAIOutput)
    return output


def kasal_crew(structured: str, settings) -> Crew:
    agent = Agent(role="Analyst", goal="Analyse", backstory="b", llm="offline/parity")
    facts = Task(description=FACTS, expected_output="three facts", agent=agent, name="facts")
    verdict = Task(
        description=JUDGE,
        expected_output="a verdict",
        agent=agent,
        name="verdict",
        **{f"output_{structured}": Verdict},  # type: ignore[arg-type]
    )
    return Crew(agents=[agent], tasks=[facts, verdict], settings=settings)


def test_the_assertions_hold_for_plain_crewai():
    assert_crew_output(plain_crewai("pydantic"), "pydantic")
    assert_crew_output(plain_crewai("json"), "json")


async def test_the_same_assertions_hold_for_kasals_durable_result(settings, worker):
    crew = kasal_crew("pydantic", settings)
    out = await asyncio.to_thread(crew.kickoff, {"topic": "tea"})
    assert_crew_output(out, "pydantic")
    assert out.execution_id and out.output == out.raw and out.tasks == out.tasks_output
    # Inside async code, kickoff is awaited (both forms are in Kasal's docs).
    out = await kasal_crew("json", settings).kickoff(inputs={"topic": "tea"})
    assert_crew_output(out, "json")
