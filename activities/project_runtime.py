"""One task of a code crew (a CrewAI project), rebuilt on the worker from the project's code.

The project's own objects run: its agents, tools, Pydantic models, guardrails and callbacks.
Kasal swaps in only what durability needs: every model observed and journaled (the offline
model when asked for), every tool observed, retries left to Temporal, the output file
written under the files directory.
"""

from __future__ import annotations

from typing import Any

from activities.crewai_runtime import BuiltTask, observed_llm
from activities.journal import ObservedTool, TaskObserver
from kasal.exceptions import InvalidSpecError
from kasal.llm import CallContext
from kasal.project import build_project_crew
from kasal.spec import AgentSpec, CrewSpec, TaskSpec


def build_project_task(
    spec: CrewSpec,
    task_spec: TaskSpec,
    agent_spec: AgentSpec,
    observer: TaskObserver,
    context: CallContext,
) -> BuiltTask:
    """One task of a code crew, rebuilt from the project's code: its agent's models are
    the spec's (journaled; offline when asked), its tools observed, its outputs Kasal's."""
    crew = build_project_crew(spec)
    names: list[str] = crew._kasal_task_names
    agent_names: dict[int, str] = crew._kasal_agent_names
    base_name = task_spec.name.removesuffix("-delegated")
    if base_name not in names:
        raise InvalidSpecError(
            f"task {base_name!r} is not in project {spec.project!r} (tasks: {', '.join(names)})",
            field="task",
        )
    task = crew.tasks[names.index(base_name)]
    by_name = {agent_names[id(a)]: a for a in crew.agents}
    agent = by_name.get(agent_spec.name) or task.agent
    if agent is None:
        raise InvalidSpecError(f"task {base_name!r} has no agent", field="agent")

    def observe(a: Any, a_spec: Any) -> list[Any]:
        a.llm = observed_llm(a_spec.llm, observer, context, inner=_as_llm(a.llm))
        if getattr(a, "function_calling_llm", None) is not None:
            a.function_calling_llm = observed_llm(
                a_spec.llm, observer, context, inner=_as_llm(a.function_calling_llm)
            )
        a.max_retry_limit = 0  # Temporal owns retries
        if a.step_callback is None and crew.step_callback is not None:
            a.step_callback = crew.step_callback
        if a.max_rpm is None and crew.max_rpm:
            a.max_rpm = crew.max_rpm
        a.tools = [ObservedTool.wrap(t, observer) for t in (a.tools or [])]
        return list(a.tools)

    specs = {a.name: a for a in spec.agents}
    tools = observe(agent, agent_spec)
    if agent.allow_delegation:
        coworkers = [a for a in crew.agents if a is not agent]
        for coworker in coworkers:
            observe(coworker, specs.get(agent_names[id(coworker)], agent_spec))
        if coworkers:
            tools += [ObservedTool.wrap(t, observer) for t in agent.get_delegation_tools(coworkers)]
    tools += [ObservedTool.wrap(t, observer) for t in (task.tools or [])]
    task.agent = agent
    task.description = task_spec.description
    task.expected_output = task_spec.expected_output
    if isinstance(task.guardrail, str):
        # CrewAI binds a text guardrail's LLM when the task is built: bind the observed one.
        from crewai.tasks.llm_guardrail import LLMGuardrail

        task._guardrail = LLMGuardrail(description=task.guardrail, llm=agent.llm)  # noqa: SLF001
    output_file = task.output_file
    task.output_file = None  # Kasal writes it, under the files directory
    # The workflow asks the human (an update), never ``input()`` on a worker.
    task.human_input = False
    return BuiltTask(
        agent=agent,
        task=task,
        tools=tools,
        output_file=task_spec.output_file or output_file,
        create_directory=task.create_directory is not False,
        extra={"task_callback": crew.task_callback},
    )


def _as_llm(llm: Any) -> Any:
    if llm is None or isinstance(llm, str):
        from crewai.utilities.llm_utils import create_llm

        return create_llm(llm)
    return llm
