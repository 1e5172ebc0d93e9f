"""Building CrewAI objects for one task attempt, and the worker-wide CrewAI adjustments.

Each attempt rebuilds the CrewAI agent and task from the spec (so any worker can run any
attempt), with the LLM and tools wrapped by :mod:`activities.journal` so every call is
observed and journaled.
"""

from __future__ import annotations

import logging
from typing import Any

from activities.journal import ObservedLLM, ObservedTool, TaskObserver
from kasal.llm import CallContext, OfflineLLM, build_llm
from kasal.spec import AgentSpec, TaskSpec
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


def build_crewai_task(
    task_spec: TaskSpec,
    agent_spec: AgentSpec,
    observer: TaskObserver,
    context: CallContext,
    feedback: str | None = None,
    previous_output: str | None = None,
) -> tuple[Any, Any, list[Any]]:
    """CrewAI ``Agent``, ``Task`` and tools for one task, all observed."""
    from crewai import Agent, Task

    inner = build_llm(agent_spec.llm)
    if isinstance(inner, OfflineLLM):
        inner.bind(context, abort=observer.check)
    llm = ObservedLLM.wrap(inner, observer)
    tools = [
        ObservedTool.wrap(tool, observer)
        for tool in resolve_tools(
            list(dict.fromkeys(agent_spec.tools + task_spec.tools)),
            {**agent_spec.tool_args, **task_spec.tool_args},
        )
    ]
    agent = Agent(
        role=agent_spec.role,
        goal=agent_spec.goal,
        backstory=agent_spec.backstory or agent_spec.role,
        llm=llm,
        tools=tools,
        max_iter=agent_spec.max_iter,
        allow_delegation=False,
        max_retry_limit=0,  # Temporal owns retries, and must see every failure.
        verbose=False,
    )
    description = task_spec.description
    if feedback is not None:
        description = (
            f"{description}\n\nYour previous answer was:\n{previous_output or ''}\n\n"
            f"A human reviewed it and gave this feedback, which you must address:\n{feedback}"
        )
    task = Task(
        description=description,
        expected_output=task_spec.expected_output,
        agent=agent,
        tools=tools,
        name=task_spec.name,
    )
    return agent, task, tools


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
