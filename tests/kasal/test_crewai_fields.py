"""Every CrewAI Agent/Task/Crew field of issue 7, field by field: accepted and honoured in the
CrewAI objects a task attempt builds, or refused with an error that says why."""

from __future__ import annotations

import pytest
from crewai import LLM
from pydantic import BaseModel

from activities.crewai_runtime import build_task, model_from_schema, write_output_file
from activities.journal import LLMObserver
from kasal import Agent, Crew, Task
from kasal.exceptions import InvalidSpecError
from kasal.llm import CallContext, OfflineLLM, all_offline, with_offline_fallback
from kasal.settings import get_settings
from kasal.spec import (
    AGENT_REFUSED,
    CREW_REFUSED,
    DEFAULT_MODEL,
    DEFAULT_PLANNING_MODEL,
    TASK_REFUSED,
    CrewSpec,
)


class Verdict(BaseModel):
    ok: bool
    reasons: list[str]


def data(agent: dict | None = None, task: dict | None = None, **crew) -> dict:
    return {
        "name": "fields",
        "agents": [
            {"name": "a", "role": "Analyst", "goal": "g", "llm": "offline/a", **(agent or {})},
            {"name": "b", "role": "Writer", "goal": "w", "llm": "offline/b"},
        ],
        "tasks": [{"name": "t", "description": "Do it", "agent": "a", **(task or {})}],
        **crew,
    }


def built(spec: CrewSpec, **kwargs):
    task = spec.tasks[0]
    return build_task(
        task,
        spec.agent(task.agent),
        LLMObserver(),  # type: ignore[arg-type]  # observes nothing: building only
        CallContext(),
        spec=spec,
        **kwargs,
    )


AGENT_FIELDS = [
    ("max_iter", 7, "max_iter", 7),
    ("max_rpm", 30, "max_rpm", 30),
    ("max_execution_time", 12, "max_execution_time", 12),
    ("respect_context_window", False, "respect_context_window", False),
    ("inject_date", True, "inject_date", True),
    ("date_format", "%d.%m.%Y", "date_format", "%d.%m.%Y"),
    ("system_template", "SYS {{ .System }}", "system_template", "SYS {{ .System }}"),
    ("prompt_template", "P {{ .Prompt }}", "prompt_template", "P {{ .Prompt }}"),
    ("response_template", "R {{ .Response }}", "response_template", "R {{ .Response }}"),
    ("use_system_prompt", False, "use_system_prompt", False),
    ("verbose", True, "verbose", True),
    ("cache", False, "cache", False),
    ("allow_delegation", True, "allow_delegation", True),
    ("max_tokens", 300, "max_tokens", 300),
]


@pytest.mark.parametrize(("field", "value", "attr", "expected"), AGENT_FIELDS)
def test_agent_fields_reach_crewai(field, value, attr, expected):
    spec = CrewSpec.from_data(data(agent={field: value}))
    assert getattr(built(spec).agent, attr) == expected
    # The facade takes the same names.
    assert getattr(Agent("R", "G", "B", llm="offline/a", **{field: value}).spec, field) == value


def test_agent_reasoning_and_retry_limit_and_function_calling_llm():
    spec = CrewSpec.from_data(
        data(
            agent={
                "reasoning": True,
                "max_reasoning_attempts": 2,
                "max_retry_limit": 4,
                "function_calling_llm": "offline/tools",
            }
        )
    )
    agent = built(spec).agent
    assert agent.reasoning is True and agent.max_reasoning_attempts == 2
    # Temporal owns retries: CrewAI's own are off, and the limit becomes the activity's.
    assert agent.max_retry_limit == 0
    assert spec.retry_for(spec.tasks[0]).maximum_attempts == 5
    assert agent.function_calling_llm.model == "offline/tools"
    # Unset: CrewAI's default of 2 retries is the crew's 3 attempts.
    plain = CrewSpec.from_data(data())
    assert plain.retry_for(plain.tasks[0]).maximum_attempts == 3


def test_agent_config_is_an_agents_yaml_entry():
    entry = {"role": "{topic} Researcher", "goal": "Find {topic}", "backstory": "b", "max_iter": 3}
    agent = Agent(config=entry, llm="offline/x")
    assert agent.spec.role == "{topic} Researcher" and agent.spec.max_iter == 3
    # Explicit fields win over config, as in CrewAI.
    assert Agent(config=entry, role="Lead").spec.role == "Lead"


def test_delegation_gives_crewais_delegation_tools_over_the_crews_agents():
    spec = CrewSpec.from_data(data(agent={"allow_delegation": True}))
    names = {t.name for t in built(spec).tools}
    assert {"Delegate work to coworker", "Ask question to coworker"} <= names
    spec = CrewSpec.from_data(data())
    assert not {t.name for t in built(spec).tools}


def test_models_as_in_crewai(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert Agent("R", "G", "B", model="gpt-4").spec.llm.model == "openai/gpt-4"
    assert Agent("R", "G", "B", llm="gpt-4o-mini").spec.llm.model == "openai/gpt-4o-mini"
    for model in ("anthropic/claude-3-5-sonnet", "gemini/gemini-2.0-flash", "azure/gpt-4o"):
        assert Agent("R", "G", "B", llm=model).spec.llm.model == model
    assert Agent("R", "G", "B", llm="ollama/llama3").spec.llm.model == "ollama/llama3"
    # No llm: CrewAI's default model, never the offline one in silence.
    assert Agent("R", "G", "B").spec.llm.model == DEFAULT_MODEL == "openai/gpt-4.1-mini"
    # CrewAI's LLM(...) object.
    llm = LLM(model="gpt-4o-mini", temperature=0.2, api_key="sk-test")
    spec = Agent("R", "G", "B", llm=llm).spec.llm
    assert spec.model == "openai/gpt-4o-mini" and spec.temperature == 0.2


def test_offline_only_when_asked_or_by_the_fallback_that_says_so(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = CrewSpec.from_data(
        {
            **data(agent={"llm": "gpt-4o"}),
            "planning": True,
            "process": "hierarchical",
            "manager_llm": "gpt-4o",
        }
    )
    offline = all_offline(spec)
    assert {a.llm.provider for a in offline.agents} == {"offline"}
    assert offline.manager_llm.model == "offline/gpt-4o"
    assert offline.planning_llm.model == "offline/" + DEFAULT_PLANNING_MODEL.split("/")[1]
    fallen, notes = with_offline_fallback(spec)
    assert fallen.agents[0].llm.model == "offline/gpt-4o"
    assert any("OPENAI_API_KEY is not set" in n for n in notes)
    assert any(n.startswith("planner:") for n in notes)


TASK_FIELDS = [
    ("markdown", True, "markdown", True),
    ("guardrail", "Every claim cites a source", "guardrail", "Every claim cites a source"),
    ("guardrail_max_retries", 5, "guardrail_max_retries", 5),
    ("async_execution", True, None, None),
    ("human_input", True, None, None),
]


@pytest.mark.parametrize(("field", "value", "attr", "expected"), TASK_FIELDS)
def test_task_fields(field, value, attr, expected):
    spec = CrewSpec.from_data(data(task={field: value}))
    assert getattr(spec.tasks[0], field) == value
    if attr is not None:
        assert getattr(built(spec).task, attr) == expected


def test_structured_outputs_are_json_schemas_in_data_and_classes_in_code():
    schema = Verdict.model_json_schema()
    spec = CrewSpec.from_data(data(task={"output_pydantic": schema}))
    task = built(spec).task
    assert task.output_pydantic.model_validate({"ok": True, "reasons": ["x"]}).ok is True
    assert spec.tasks[0].output_format == "pydantic"
    spec = CrewSpec.from_data(data(task={"output_json": schema}))
    assert built(spec).task.output_json is not None and spec.tasks[0].output_format == "json"
    # The facade takes the class itself.
    agent = Agent("R", "G", "B", llm="offline/a")
    crew = Crew(agents=[agent], tasks=[Task("Judge", agent=agent, output_pydantic=Verdict)])
    assert crew.spec.tasks[0].output_pydantic["properties"].keys() == {"ok", "reasons"}
    with pytest.raises(InvalidSpecError, match="not both"):
        CrewSpec.from_data(data(task={"output_json": schema, "output_pydantic": schema}))
    with pytest.raises(InvalidSpecError, match="JSON Schema of an object"):
        CrewSpec.from_data(data(task={"output_json": {"type": "string"}}))
    assert model_from_schema(schema, "t").model_validate({"ok": False, "reasons": []})


def test_the_offline_model_answers_with_schema_valid_output():
    llm = OfflineLLM(model="offline/x")
    text = llm.call([{"role": "user", "content": "Judge"}], response_model=Verdict)
    assert Verdict.model_validate_json(text)


def test_output_file_is_confined_under_the_files_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("KASAL_FILES_DIR", str(tmp_path / "files"))
    get_settings.cache_clear()
    try:
        spec = CrewSpec.from_data(data(task={"output_file": "out/{topic}.md"}))
        assert spec.interpolated({"topic": "tea"}).tasks[0].output_file == "out/tea.md"
        made = built(spec.interpolated({"topic": "tea"}))
        # CrewAI would write relative to the worker's cwd: Kasal writes it instead.
        assert made.task.output_file is None and made.output_file == "out/tea.md"
        write_output_file("out/tea.md", "hello")
        assert (tmp_path / "files" / "out" / "tea.md").read_text() == "hello"
        for bad in ("/etc/passwd", "../escape.md"):
            with pytest.raises(InvalidSpecError, match="output_file"):
                CrewSpec.from_data(data(task={"output_file": bad}))
        with pytest.raises(InvalidSpecError, match="create_directory"):
            write_output_file("new/dir/x.md", "x", create_directory=False)
    finally:
        get_settings.cache_clear()


def test_callables_in_the_facade_stay_in_their_process():
    def check(output):
        return (True, output.raw)

    seen = []
    agent = Agent("R", "G", "B", llm="offline/a")
    task = Task("Do it", agent=agent, guardrail=check, callback=seen.append)
    crew = Crew(agents=[agent], tasks=[task], step_callback=print, task_callback=seen.append)
    made = built(crew.spec)
    assert made.task.guardrail is check and made.task.callback == seen.append
    assert made.agent.step_callback is print
    # A worker in another process does not have them, and says so.
    spec = crew.spec.model_copy(update={"step_callback_callable": "elsewhere.fn#1"})
    with pytest.raises(InvalidSpecError, match="cannot travel"):
        built(spec)


def test_the_docs_task_form_without_expected_output():
    agent = Agent("Researcher", "Find facts", "Curious", model="gpt-4")
    task = Task(description="Find three facts", agent=agent)
    crew = Crew(agents=[agent], tasks=[task])
    assert crew.spec.tasks[0].expected_output  # CrewAI requires one: a default is given


CREW_FIELDS = [
    ("planning", True),
    ("planning_llm", {"model": "offline/planner"}),
    ("max_rpm", 60),
    ("verbose", True),
    ("cache", False),
]


@pytest.mark.parametrize(("field", "value"), CREW_FIELDS)
def test_crew_fields(field, value):
    spec = CrewSpec.from_data(data(**{field: value}))
    dumped = getattr(spec, field)
    assert (
        dumped.model_dump(exclude_defaults=True) if hasattr(dumped, "model_dump") else dumped
    ) == value


def test_crew_max_rpm_and_verbose_reach_agents_that_set_none():
    spec = CrewSpec.from_data(data(max_rpm=42, verbose=True))
    agent = built(spec).agent
    assert agent.max_rpm == 42 and agent.verbose is True


def test_processes_and_managers():
    assert CrewSpec.from_data(data(process="hierarchical", manager_llm="gpt-4o")).manager_llm
    from crewai import Process

    agent = Agent("R", "G", "B", llm="offline/a")
    manager = Agent("Boss", "Lead", "B", llm="offline/boss")
    crew = Crew(
        agents=[agent],
        tasks=[Task("Do it", agent=agent)],
        process=Process.hierarchical,
        manager_agent=manager,
    )
    assert crew.spec.process == "hierarchical" and crew.spec.manager_agent.role == "Boss"
    with pytest.raises(InvalidSpecError, match="manager_llm or manager_agent"):
        CrewSpec.from_data(data(process="hierarchical"))
    # Refused rather than dropped: the manager's final answer is not converted yet.
    with pytest.raises(InvalidSpecError, match="output_pydantic is not supported with the hier"):
        CrewSpec.from_data(
            data(
                process="hierarchical",
                manager_llm="gpt-4o",
                task={"output_pydantic": Verdict.model_json_schema()},
            )
        )


@pytest.mark.parametrize(("kind", "field"), [("agent", f) for f in AGENT_REFUSED])
def test_refused_agent_fields_say_why(kind, field):
    with pytest.raises(InvalidSpecError, match=f"agent field '{field}' is not supported"):
        CrewSpec.from_data(data(agent={field: "x"}))


@pytest.mark.parametrize("field", list(TASK_REFUSED))
def test_refused_task_fields_say_why(field):
    with pytest.raises(InvalidSpecError, match=f"task field '{field}' is not supported"):
        CrewSpec.from_data(data(task={field: "x"}))


@pytest.mark.parametrize("field", list(CREW_REFUSED))
def test_refused_crew_fields_say_why(field):
    with pytest.raises(InvalidSpecError, match=f"crew field '{field}' is not supported"):
        CrewSpec.from_data(data(**{field: "x"}))


def test_unknown_fields_are_refused_never_dropped():
    with pytest.raises(InvalidSpecError, match="colour"):
        CrewSpec.from_data(data(agent={"colour": "red"}))
    with pytest.raises(InvalidSpecError, match="colour"):
        Agent("R", "G", "B", colour="red")


def test_crewai_yaml_shapes_mappings_keyed_by_name():
    spec = CrewSpec.from_data(
        {
            "name": "yaml",
            "agents": {"researcher": {"role": "R\n", "goal": "G", "backstory": "B"}},
            "tasks": {
                "research": {
                    "description": "D\n",
                    "expected_output": "E",
                    "agent": "researcher",
                    "max_retries": 1,
                }
            },
        }
    )
    assert spec.agents[0].name == "researcher" and spec.agents[0].role == "R"
    assert spec.tasks[0].guardrail_max_retries == 1  # CrewAI's deprecated name


def test_a_structured_answer_is_journaled_as_json_that_validates_back():
    from activities.journal import decode_response, encode_response

    answer = Verdict(ok=True, reasons=["cited"])
    text = encode_response(answer)
    assert Verdict.model_validate_json(decode_response(text)) == answer


def test_a_code_crews_models_are_its_own_so_the_catalog_leaves_them_to_crewai():
    from kasal.catalog import Catalog, check_spec

    data_crew = CrewSpec.from_data(data(agent={"llm": "groq/llama-3.1"}))
    assert [p.code for p in check_spec(data_crew, Catalog.of())] == ["unknown_provider"]
    code_crew = data_crew.model_copy(update={"project": "my_crew"})
    assert check_spec(code_crew, Catalog.of()) == []


CARRIED = (
    [data(agent={f: v}) for f, v, _, _ in AGENT_FIELDS]
    + [data(task={f: v}) for f, v, _, _ in TASK_FIELDS]
    + [{**data(), f: v} for f, v in CREW_FIELDS]
    + [
        data(agent={"config": {"verbose": True, "max_iter": 3}, "verbose": False}),
        data(task={"output_json": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}),
        data(agent={"tools": ["calculator"], "llm": {"model": "offline/x", "temperature": 0.0}}),
        data(
            task={"retry": {"maximum_attempts": 1}, "timeout": {"start_to_close": 5}},
            process="hierarchical",
            manager_llm="offline/boss",
        ),
        data(memory=True, knowledge_sources=["Tea grows in Assam."]),
    ]
)


@pytest.mark.parametrize("raw", CARRIED)
def test_specs_cross_temporal_without_their_defaults_and_come_back_whole(raw):
    """Workflow and activity inputs carry only the non-default fields (they are stored in
    history for every task); validation on the other side gives back the same spec."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from activities.models import RunTaskInput
    from kasal.execution import CrewWorkflowInput

    converter = pydantic_data_converter.payload_converter
    spec = CrewSpec.from_data(raw)
    for value in (
        CrewWorkflowInput(execution_id="e", spec=spec),
        RunTaskInput(execution_id="e", spec=spec, task="t"),
    ):
        payload = converter.to_payloads([value])
        back = converter.from_payloads(payload, [type(value)])[0]
        assert back.spec == spec
        assert b'"max_iter":25' not in payload[0].data  # a CrewAI default, not carried
