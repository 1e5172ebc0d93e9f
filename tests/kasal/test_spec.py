"""Crew specs: validation that says which field and why, YAML/JSON round trips, inputs."""

from __future__ import annotations

import json

import pytest

from kasal.exceptions import InvalidSpecError
from kasal.spec import CrewSpec
from tests.helpers import crew

YAML = """
name: demo
agents:
  - role: Research Analyst
    goal: Study {topic}
    model: openai/gpt-4o
    tools: [file_read]
tasks:
  - name: study
    description: Study {topic} in depth
    expected_output: notes
    agent: research_analyst
    retry: {maximum_attempts: 5}
  - name: report
    description: Report
    expected_output: a report
    agent: research_analyst
"""


def test_yaml_round_trip_and_defaults():
    spec = CrewSpec.from_yaml(YAML)
    assert spec.agents[0].name == "research_analyst"
    assert spec.agents[0].llm.model == "openai/gpt-4o" and spec.agents[0].llm.provider == "openai"
    assert spec.retry_for(spec.tasks[0]).maximum_attempts == 5
    assert spec.retry_for(spec.tasks[1]).maximum_attempts == 3
    assert spec.timeout_for(spec.tasks[1]).heartbeat == 10
    assert spec.context_for(0) == [] and spec.context_for(1) == ["study"]


def test_default_context_follows_crewai():
    spec = crew(
        [
            {"name": "s0", "description": "d"},
            {"name": "a1", "description": "d", "async_execution": True},
            {"name": "a2", "description": "d", "async_execution": True},
            {"name": "s3", "description": "d"},
            {"name": "s4", "description": "d", "context": ["a2"]},
        ]
    )
    assert spec.context_for(1) == ["s0"] and spec.context_for(2) == ["s0"]  # in parallel
    assert spec.context_for(3) == ["s0", "a1", "a2"]  # a sync task sees all before it
    assert spec.context_for(4) == ["a2"]  # explicit context wins
    assert CrewSpec.from_yaml(spec.to_yaml()) == spec
    assert CrewSpec.from_data(json.loads(spec.model_dump_json())) == spec


def test_placeholders_are_filled_and_missing_ones_named():
    spec = CrewSpec.from_yaml(YAML)
    assert spec.placeholders() == {"topic"}
    filled = spec.interpolated({"topic": "tea"})
    assert filled.tasks[0].description == "Study tea in depth"
    assert filled.agents[0].goal == "Study tea"
    with pytest.raises(InvalidSpecError, match="topic") as info:
        spec.interpolated({})
    assert info.value.field == "inputs"


def test_json_braces_that_are_not_placeholders_survive():
    spec = crew([{"name": "t", "description": 'Return {"a": 1} for {x}'}])
    assert spec.interpolated({"x": "y"}).tasks[0].description == 'Return {"a": 1} for y'


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d["tasks"][0].update(agent="ghost"), "names agent 'ghost'"),
        (lambda d: d["tasks"][0].update(context=["report"]), "comes later"),
        (lambda d: d["tasks"][0].update(context=["nope"]), "not a task of the crew"),
        (lambda d: d["tasks"][1].update(name="study"), "duplicate task"),
        # A bare name is OpenAI's, as in CrewAI; an empty side of the slash is not a model.
        (lambda d: d["agents"][0].update(model="openai/"), "<provider>/<model>"),
        (lambda d: d["tasks"][0].update(colour="red"), "tasks.0.colour"),
        (
            lambda d: d["tasks"][0]["retry"].update(maximum_attempts=0),
            "tasks.0.retry.maximum_attempts",
        ),
        (lambda d: d.update(process="hierarchical"), "manager_llm"),
        (lambda d: d.update(tasks=[]), "tasks"),
    ],
)
def test_invalid_specs_say_which_field_and_why(change, needle):
    import yaml

    data = yaml.safe_load(YAML)
    change(data)
    with pytest.raises(InvalidSpecError) as info:
        CrewSpec.from_data(data)
    assert needle in str(info.value)


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(InvalidSpecError, match="not valid YAML"):
        CrewSpec.from_yaml("agents: [unclosed")
    with pytest.raises(InvalidSpecError, match="mapping"):
        CrewSpec.from_yaml("- just a list")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(InvalidSpecError, match="not valid JSON"):
        CrewSpec.from_file(bad)
    with pytest.raises(InvalidSpecError, match="no such file"):
        CrewSpec.from_file(tmp_path / "missing.yaml")
