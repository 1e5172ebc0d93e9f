"""Building CrewAI objects for one task attempt, and the worker-wide CrewAI adjustments.

Every CrewAI field a spec sets is honoured here, or refused by the spec with its reason.

Each attempt rebuilds the CrewAI agent and task from the spec (so any worker can run any
attempt), with the LLM and tools wrapped by :mod:`activities.journal` so every call is
observed and journaled.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.journal import ObservedLLM, ObservedTool, TaskObserver
from kasal.callables import resolve_callable
from kasal.exceptions import GuardrailFailedError, InvalidSpecError, TaskTimeoutError
from kasal.llm import CallContext, OfflineLLM, build_llm
from kasal.settings import get_settings
from kasal.spec import AgentSpec, CrewSpec, LLMSpec, TaskSpec
from kasal.tools import resolve_tools

#: CrewAI joins context outputs this way when a task sees several.
CONTEXT_SEPARATOR = "\n\n----------\n\n"


def prepare_crewai() -> None:
    """Once per worker: CrewAI quiet, and its per-agent costs paid once."""
    _quiet_crewai()
    _reuse_executor_state_class()


def describe_context(context: dict[str, str]) -> str:
    """The context text a task sees, formatted the way CrewAI formats it."""
    return CONTEXT_SEPARATOR.join(context.values())


@dataclass
class BuiltTask:
    """The CrewAI objects one task attempt runs, all observed, and what Kasal does after."""

    agent: Any
    task: Any
    tools: list[Any]
    #: Where the output goes under the files directory (CrewAI's own writer is bypassed:
    #: it writes relative to the worker's working directory).
    output_file: str | None = None
    create_directory: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskRun:
    """What one task attempt produced."""

    raw: str
    json_dict: dict[str, Any] | None
    output_format: str
    output_file: str | None = None


def observed_llm(
    spec: LLMSpec, observer: TaskObserver, context: CallContext, inner: Any = None
) -> ObservedLLM:
    """The LLM ``spec`` names (or ``inner``, a project's own), observed and journaled.

    An offline spec always wins: asking for offline runs (``KASAL_OFFLINE``, the embedded
    fallback) replaces the project's model too.
    """
    if inner is None or spec.provider == "offline":
        inner = build_llm(spec)
    if isinstance(inner, OfflineLLM):
        inner.bind(context, abort=observer.check)
    return ObservedLLM.wrap(inner, observer)


def model_from_schema(schema: dict[str, Any], name: str) -> Any:
    """A Pydantic class from a data spec's JSON Schema (CrewAI's own converter)."""
    from crewai.utilities.pydantic_schema_utils import create_model_from_schema

    schema = dict(schema)
    schema.setdefault("title", _class_name(name))
    schema.setdefault("type", "object")
    try:
        return create_model_from_schema(schema)
    except Exception as exc:
        raise InvalidSpecError(f"not a usable JSON Schema: {exc}", field="output_pydantic") from exc


def _class_name(name: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name) if p) or "Output"


def _agent_kwargs(agent_spec: AgentSpec, spec: CrewSpec | None) -> dict[str, Any]:
    """The CrewAI ``Agent`` fields a spec sets (CrewAI's names, honoured as CrewAI does)."""
    kwargs: dict[str, Any] = {
        "role": agent_spec.role,
        "goal": agent_spec.goal,
        "backstory": agent_spec.backstory or agent_spec.role,
        "max_iter": agent_spec.max_iter,
        "max_rpm": agent_spec.max_rpm or (spec.max_rpm if spec else None),
        "max_execution_time": agent_spec.max_execution_time,
        "respect_context_window": agent_spec.respect_context_window,
        "inject_date": agent_spec.inject_date,
        "date_format": agent_spec.date_format,
        "system_template": agent_spec.system_template,
        "prompt_template": agent_spec.prompt_template,
        "response_template": agent_spec.response_template,
        "use_system_prompt": agent_spec.use_system_prompt,
        "verbose": agent_spec.verbose or bool(spec and spec.verbose),
        "cache": agent_spec.cache,
        "allow_delegation": agent_spec.allow_delegation,
        "max_retry_limit": 0,  # Temporal owns retries, and must see every failure.
    }
    if agent_spec.reasoning:
        kwargs["reasoning"] = True
        kwargs["max_reasoning_attempts"] = agent_spec.max_reasoning_attempts
    if agent_spec.max_tokens is not None:
        kwargs["max_tokens"] = agent_spec.max_tokens
    return kwargs


def _data_agent(
    agent_spec: AgentSpec,
    spec: CrewSpec | None,
    observer: TaskObserver,
    context: CallContext,
    step_callback: Any = None,
) -> tuple[Any, list[Any]]:
    from crewai import Agent

    tools = [
        ObservedTool.wrap(tool, observer)
        for tool in resolve_tools(agent_spec.tools, agent_spec.tool_args)
    ]
    kwargs = _agent_kwargs(agent_spec, spec)
    if agent_spec.function_calling_llm is not None:
        kwargs["function_calling_llm"] = observed_llm(
            agent_spec.function_calling_llm, observer, context
        )
    if step_callback is not None:
        kwargs["step_callback"] = step_callback
    agent = Agent(llm=observed_llm(agent_spec.llm, observer, context), tools=tools, **kwargs)
    return agent, tools


def build_crewai_task(
    task_spec: TaskSpec,
    agent_spec: AgentSpec,
    observer: TaskObserver,
    context: CallContext,
    feedback: str | None = None,
    previous_output: str | None = None,
    *,
    spec: CrewSpec | None = None,
    plan: str | None = None,
) -> tuple[Any, Any, list[Any]]:
    """CrewAI ``Agent``, ``Task`` and tools for one task, all observed."""
    built = build_task(
        task_spec,
        agent_spec,
        observer,
        context,
        feedback,
        previous_output,
        spec=spec,
        plan=plan,
    )
    return built.agent, built.task, built.tools


def _with_feedback(description: str, feedback: str | None, previous: str | None) -> str:
    if feedback is None:
        return description
    return (
        f"{description}\n\nYour previous answer was:\n{previous or ''}\n\n"
        f"A human reviewed it and gave this feedback, which you must address:\n{feedback}"
    )


def build_task(
    task_spec: TaskSpec,
    agent_spec: AgentSpec,
    observer: TaskObserver,
    context: CallContext,
    feedback: str | None = None,
    previous_output: str | None = None,
    *,
    spec: CrewSpec | None = None,
    plan: str | None = None,
) -> BuiltTask:
    """Every CrewAI object one task attempt needs: from a data spec, or (a code crew)
    rebuilt from the project's own code with the spec's models and the observers."""
    if spec is not None and spec.project:
        from activities.project_runtime import build_project_task

        built = build_project_task(spec, task_spec, agent_spec, observer, context)
        built.task.description = _with_feedback(
            built.task.description + (plan or ""), feedback, previous_output
        )
        return built
    from crewai import Task

    step_callback = None
    if spec is not None and spec.step_callback_callable:
        step_callback = resolve_callable(spec.step_callback_callable, "step_callback")
    agent, tools = _data_agent(agent_spec, spec, observer, context, step_callback)
    task_tools = [
        ObservedTool.wrap(t, observer)
        for t in resolve_tools(task_spec.tools, {**agent_spec.tool_args, **task_spec.tool_args})
    ]
    tools = _unique(tools + task_tools)
    if agent_spec.allow_delegation and spec is not None:
        coworkers = [
            _data_agent(a, spec, observer, context)[0]
            for a in spec.agents
            if a.name != agent_spec.name
        ]
        if coworkers:
            # CrewAI's own delegation tools; each coworker's calls go through the same
            # observer, so every delegation is journaled and replayed like the task's own.
            tools = tools + [
                ObservedTool.wrap(t, observer) for t in agent.get_delegation_tools(coworkers)
            ]
    kwargs: dict[str, Any] = {
        "description": _with_feedback(
            task_spec.description + (plan or ""), feedback, previous_output
        ),
        "expected_output": task_spec.expected_output,
        "agent": agent,
        "tools": tools,
        "name": task_spec.name,
        "markdown": task_spec.markdown,
        "guardrail_max_retries": task_spec.guardrail_max_retries,
    }
    if task_spec.output_json is not None:
        kwargs["output_json"] = model_from_schema(task_spec.output_json, task_spec.name)
    if task_spec.output_pydantic is not None:
        kwargs["output_pydantic"] = model_from_schema(task_spec.output_pydantic, task_spec.name)
    if task_spec.guardrail_callable:
        kwargs["guardrail"] = resolve_callable(task_spec.guardrail_callable, "guardrail")
    elif task_spec.guardrail:
        kwargs["guardrail"] = task_spec.guardrail  # checked by the agent's (observed) LLM
    if task_spec.callback_callable:
        kwargs["callback"] = resolve_callable(task_spec.callback_callable, "callback")
    return BuiltTask(
        agent=agent,
        task=Task(**kwargs),
        tools=tools,
        output_file=task_spec.output_file,
        create_directory=task_spec.create_directory,
    )


def _unique(tools: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for tool in tools:
        seen.setdefault(tool.name, tool)
    return list(seen.values())


def execute_task(built: BuiltTask, context: str | None, task_callback: Any = None) -> TaskRun:
    """Run the task with CrewAI; write its output file; say what came out."""
    try:
        output = built.task.execute_sync(agent=built.agent, context=context, tools=built.tools)
    except TimeoutError as exc:
        raise TaskTimeoutError(str(exc)) from exc
    except Exception as exc:
        if "validation after" in str(exc) and "guardrail" in str(exc):
            raise GuardrailFailedError(str(exc)) from exc
        raise
    if task_callback is not None:
        task_callback(output)
    json_dict = output.json_dict
    if json_dict is None and output.pydantic is not None:
        json_dict = output.pydantic.model_dump(mode="json")
    written = None
    if built.output_file:
        if output.json_dict:
            content = json.dumps(output.json_dict, indent=2)
        elif output.pydantic is not None:
            content = output.pydantic.model_dump_json()
        else:
            content = str(output.raw)
        written = write_output_file(built.output_file, content, built.create_directory)
    return TaskRun(
        raw=str(output.raw),
        json_dict=json_dict,
        output_format=str(getattr(output.output_format, "value", output.output_format)),
        output_file=written,
    )


def write_output_file(relative: str, content: str, create_directory: bool = True) -> str:
    """Write a task's ``output_file`` under the files directory, never outside it.

    A retried attempt writes the same file again: the write is idempotent.
    """
    root = get_settings().readable_files_dir()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise InvalidSpecError(
            f"output_file {relative!r} is outside the files directory {root}",
            field="output_file",
        )
    if not target.parent.exists():
        if not create_directory:
            raise InvalidSpecError(
                f"output_file {relative!r}: directory {target.parent} does not exist and "
                "create_directory is false",
                field="output_file",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(target)
    return str(Path(relative))


def _quiet_crewai() -> None:
    """CrewAI prints panels for every task to stdout; a worker reports through events."""
    try:
        from crewai.events.event_listener import EventListener

        EventListener().formatter.verbose = False
    except Exception:  # pragma: no cover - only cosmetics
        pass
    logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)


def _reuse_executor_state_class() -> None:
    """Build CrewAI's agent-executor state class once per worker, not once per task.

    Each new ``AgentExecutor`` (a CrewAI Flow) first makes a Flow state by defining a new
    pydantic class, ``StateWithId(FlowState, AgentExecutorState)``, whose schema pydantic
    generates: ~5.5 ms of CPU. A plain crew pays it once, since its agents keep their
    executor; Kasal rebuilds the agent in every activity, so it paid it per task (measured:
    ``create_agent_executor`` 6.8 -> 1.2 ms, ``execute_sync`` 21 -> 14.5 ms). The state
    made here has the same bases, fields and fresh id, from one class; and the executor
    replaces it with its own ``AgentExecutorState()`` right after (``_setup_executor``).
    Anything unexpected in CrewAI's internals leaves its own path in place.
    """
    try:
        from crewai.agents.agent_executor import AgentExecutor, AgentExecutorState
        from crewai.flow.flow import Flow, FlowState

        if (
            AgentExecutor.__dict__.get("_create_initial_state") is not None
            or AgentExecutor._create_initial_state is not Flow._create_initial_state
            or getattr(AgentExecutor, "_initial_state_t", None) is not AgentExecutorState
            or not hasattr(Flow, "_create_default_extension_state")
        ):
            return  # already applied, or CrewAI changed: keep its own path
    except Exception:  # pragma: no cover - a CrewAI without these internals
        return

    class StateWithId(FlowState, AgentExecutorState):  # type: ignore[misc]
        pass

    original = Flow._create_initial_state

    def _create_initial_state(self: Any) -> Any:
        if self.initial_state is None and self._initial_state_t is AgentExecutorState:
            extension = self._create_default_extension_state()
            if extension is not None:
                return extension
            return StateWithId()  # FlowState's default id is a fresh uuid4, as CrewAI's
        return original(self)

    AgentExecutor._create_initial_state = _create_initial_state  # type: ignore[method-assign]
