"""The ``Agent`` / ``Task`` / ``Crew`` facade: write a crew as in CrewAI, run it durably.

Each object is a thin builder over the spec models (``kasal.spec``); ``Crew.kickoff`` starts
a ``CrewWorkflow`` and waits for it. With no Temporal address configured the first kickoff
starts the embedded dev server and an in-process worker, shared by later kickoffs.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from kasal.callables import register_callable
from kasal.client import ExecutionHandle, Runtime
from kasal.exceptions import AgentExecutionError, ExecutionFailedError, InvalidSpecError
from kasal.execution import (
    CrewWorkflowResult,
    Event,
    ExecutionStatus,
    FeedbackResult,
    WaitingTask,
)
from kasal.settings import Settings, disable_crewai_telemetry
from kasal.spec import AgentSpec, CrewSpec, LLMSpec, RetrySpec, TaskSpec, TimeoutSpec, slug

if TYPE_CHECKING:
    from kasal.results import CrewOutput

T = TypeVar("T")


class Agent:
    """An agent, with CrewAI's constructor: ``Agent(role, goal, backstory, llm=...)``.

    Every ``crewai.Agent`` field Kasal honours is a keyword (``allow_delegation``,
    ``max_iter``, ``max_rpm``, ``max_execution_time``, ``reasoning``, templates, ...);
    ``config`` is a mapping of them (an agents.yaml entry). ``llm``/``model`` is a model
    string (no provider: OpenAI), CrewAI's ``LLM(...)``, or Kasal's ``LLMSpec``; none means
    CrewAI's default model. What cannot run durably is refused with the reason.
    """

    def __init__(
        self,
        role: str | None = None,
        goal: str | None = None,
        backstory: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        model: str | None = None,
        llm: Any = None,
        function_calling_llm: Any = None,
        tools: list[Any] | None = None,
        name: str | None = None,
        **fields: Any,
    ) -> None:
        data: dict[str, Any] = {**(config or {}), **fields}
        for key, value in (("role", role), ("goal", goal), ("backstory", backstory)):
            if value is not None:
                data[key] = value
        data.setdefault("backstory", "")
        if name or isinstance(data.get("role"), str):
            data["name"] = name or slug(str(data["role"]))
        if tools is not None or "tools" in data:
            data["tools"] = [_tool_name(t) for t in (tools if tools is not None else data["tools"])]
        if llm is not None:
            data["llm"] = _llm_data(llm)
        if model is not None:
            data["model"] = model
        if function_calling_llm is not None:
            data["function_calling_llm"] = _llm_data(function_calling_llm)
        self.spec = _validated(AgentSpec, data)

    @property
    def name(self) -> str:
        """The agent's name in the crew spec."""
        return self.spec.name

    @property
    def role(self) -> str:
        """The agent's role (CrewAI's ``Agent.role``)."""
        return self.spec.role

    async def execute(
        self,
        task: str,
        *,
        expected_output: str | None = None,
        settings: Settings | None = None,
    ) -> AgentResult:
        """Run one task with this agent, durably; ``.success`` says it finished.

        Raises :class:`AgentExecutionError` (``TaskTimeoutError`` for a timeout) when the
        agent could not finish it, after the task's retries.
        """
        work = Task(description=task, expected_output=expected_output, agent=self)
        crew = Crew(agents=[self], tasks=[work], name=f"{self.name}-execute", settings=settings)
        try:
            result = await crew.kickoff_async()
        except AgentExecutionError:
            raise
        except ExecutionFailedError as exc:
            raise AgentExecutionError(str(exc), details=exc.details) from exc
        return AgentResult(
            success=True, output=result.raw, raw=result.raw, execution_id=result.execution_id
        )


@dataclass
class AgentResult:
    """What ``Agent.execute`` returns."""

    success: bool
    output: str
    raw: str
    execution_id: str
    error: str | None = None

    def __str__(self) -> str:
        return self.output


class Task:
    """A task, with CrewAI's constructor: ``Task(description=..., expected_output=...,
    agent=...)``; ``expected_output`` may be left out (the Kasal docs' form).

    ``output_json`` / ``output_pydantic`` take a Pydantic class (or a JSON Schema);
    ``guardrail`` a function (kept in this process) or a text rule checked by an LLM;
    ``output_file`` is written under the files directory. ``retry``/``timeout`` are
    Kasal's per-task Temporal policies.
    """

    def __init__(
        self,
        description: str | None = None,
        expected_output: str | None = None,
        agent: Agent | None = None,
        *,
        config: dict[str, Any] | None = None,
        name: str | None = None,
        context: list[Task] | None = None,
        tools: list[Any] | None = None,
        output_json: Any = None,
        output_pydantic: Any = None,
        guardrail: Any = None,
        callback: Any = None,
        retry: RetrySpec | dict[str, Any] | None = None,
        timeout: TimeoutSpec | dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        data: dict[str, Any] = {**(config or {}), **fields}
        if description is not None:
            data["description"] = description
        if expected_output is not None:
            data["expected_output"] = expected_output
        self.description = str(data.get("description", ""))
        self.expected_output = data.get("expected_output")
        self.agent = agent
        self.name = name or data.pop("name", None)
        self.context = context
        self.tools = [_tool_name(t) for t in tools or []]
        self.retry = retry
        self.timeout = timeout
        #: Pydantic classes as given (results are rebuilt with them, as CrewAI returns).
        self.output_pydantic_class = output_pydantic if isinstance(output_pydantic, type) else None
        self.output_json_class = output_json if isinstance(output_json, type) else None
        data["output_json"] = _schema_of(output_json)
        data["output_pydantic"] = _schema_of(output_pydantic)
        if callable(guardrail):
            data["guardrail_callable"] = register_callable(guardrail)
        elif guardrail is not None:
            data["guardrail"] = guardrail
        if callback is not None:
            data["callback_callable"] = register_callable(callback)
        data.pop("agent", None)
        self._data = data
        # Checked now, so a wrong field is an error where it is written.
        self.to_spec(self.name or "task", agent_name=agent.name if agent else "agent", check=True)

    def to_spec(self, name: str, *, agent_name: str | None = None, check: bool = False) -> TaskSpec:
        """The task as spec data, called ``name`` (``check``: fields only, before the crew
        names its tasks)."""
        agent = agent_name or (self.agent.name if self.agent else None)
        context = None if self.context is None else [t.name for t in self.context]
        return _validated(
            TaskSpec,
            {
                **self._data,
                "name": name,
                "agent": agent,
                "context": None if check else context,
                "tools": self.tools,
                "retry": _dump(self.retry),
                "timeout": _dump(self.timeout),
            },
        )


class Crew:
    """A crew of agents and tasks, with CrewAI's constructor. ``kickoff`` runs it as a
    durable Temporal workflow (every task an activity) and returns CrewAI's ``CrewOutput``.
    """

    def __init__(
        self,
        agents: list[Agent] | None = None,
        tasks: list[Task] | None = None,
        *,
        process: Any = "sequential",
        name: str = "crew",
        manager_llm: Any = None,
        manager_agent: Agent | None = None,
        planning: bool = False,
        planning_llm: Any = None,
        step_callback: Any = None,
        task_callback: Any = None,
        retry: RetrySpec | dict[str, Any] | None = None,
        timeout: TimeoutSpec | dict[str, Any] | None = None,
        settings: Settings | None = None,
        config: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        agents = list(agents or [])
        tasks = list(tasks or [])
        process_name = str(getattr(process, "value", process))
        for index, task in enumerate(tasks):
            task.name = task.name or f"task_{index + 1}"
            if task.agent is None:
                if process_name != "hierarchical" or not agents:
                    raise InvalidSpecError(
                        f"task {task.name!r} has no agent: a sequential crew's tasks each "
                        "need one (as in CrewAI)",
                        field=f"tasks.{index}.agent",
                    )
                task.agent = agents[0]  # the manager delegates it anyway
            if all(a is not task.agent for a in agents):
                agents.append(task.agent)
        data: dict[str, Any] = {
            **(config or {}),
            **fields,
            "name": name,
            "process": process_name,
            "agents": [a.spec.model_dump() for a in agents],
            "tasks": [t.to_spec(t.name or "").model_dump() for t in tasks],
            "planning": planning,
        }
        if manager_llm is not None:
            data["manager_llm"] = _llm_data(manager_llm)
        if manager_agent is not None:
            data["manager_agent"] = manager_agent.spec.model_dump()
        if planning_llm is not None:
            data["planning_llm"] = _llm_data(planning_llm)
        if step_callback is not None:
            data["step_callback_callable"] = register_callable(step_callback)
        if task_callback is not None:
            data["task_callback_callable"] = register_callable(task_callback)
        if retry is not None:
            data["retry"] = _dump(retry)
        if timeout is not None:
            data["timeout"] = _dump(timeout)
        self.spec = CrewSpec.from_data(data)
        self.settings = settings
        self._models: dict[str, type[Any]] = {
            t.name: t.output_pydantic_class
            for t in tasks
            if t.name and t.output_pydantic_class is not None
        }

    @classmethod
    def from_spec(cls, spec: CrewSpec, settings: Settings | None = None) -> Crew:
        """A crew from spec data (YAML, JSON, the API)."""
        crew = cls.__new__(cls)
        crew.spec = spec
        crew.settings = settings
        crew._models = {}
        return crew

    @classmethod
    def from_file(cls, path: str | Path, settings: Settings | None = None) -> Crew:
        """A crew from a YAML or JSON spec file."""
        return cls.from_spec(CrewSpec.from_file(path), settings)

    @classmethod
    def from_project(cls, path: str | Path, settings: Settings | None = None) -> Crew:
        """A CrewAI project's crew (``@CrewBase``), built by its own code, run durably."""
        from kasal.project import load_project, project_pydantic_models

        project = load_project(path)
        crew = cls.from_spec(project.to_spec(project.default_inputs()), settings)
        crew._models = project_pydantic_models(crew.spec)
        return crew

    # -- running -------------------------------------------------------------------------

    def kickoff(self, inputs: dict[str, Any] | None = None) -> Any:
        """Run the crew durably and wait for its ``CrewOutput``.

        Called inside running async code it returns an awaitable instead (``await
        crew.kickoff()``), as blocking the caller's event loop would stall it.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._output(self.start(inputs).result(), inputs)
        return self.kickoff_async(inputs)

    def kickoff_for_each(self, inputs: list[dict[str, Any]]) -> list[CrewOutput]:
        """CrewAI's ``kickoff_for_each``: one durable execution per inputs, run together."""
        runs = [self.start(i) for i in inputs]
        return [self._output(run.result(), i) for run, i in zip(runs, inputs, strict=True)]

    async def kickoff_async(self, inputs: dict[str, Any] | None = None) -> CrewOutput:
        """``kickoff`` for code that already runs an event loop."""
        result = await (await self.start_async(inputs)).result()
        return self._output(result, inputs)

    async def akickoff(self, inputs: dict[str, Any] | None = None) -> CrewOutput:
        """CrewAI's native async kickoff: the same durable execution."""
        return await self.kickoff_async(inputs)

    async def kickoff_for_each_async(self, inputs: list[dict[str, Any]]) -> list[CrewOutput]:
        """``kickoff_for_each`` for async code: the executions run together."""
        return list(await asyncio.gather(*(self.kickoff_async(i) for i in inputs)))

    def _output(self, result: CrewWorkflowResult, inputs: dict[str, Any] | None) -> CrewOutput:
        from kasal.results import crew_output

        return crew_output(result, self.spec, inputs, self._models)

    def start(
        self, inputs: dict[str, Any] | None = None, *, execution_id: str | None = None
    ) -> Execution:
        """Start the crew; returns at once with a handle to the running execution."""
        background = _background(self.settings)
        handle = background.run(
            background.runtime.start_execution(self.spec, inputs, execution_id=execution_id)
        )
        return Execution(handle, background)

    async def start_async(
        self, inputs: dict[str, Any] | None = None, *, execution_id: str | None = None
    ) -> ExecutionHandle:
        """``start`` for code that already runs an event loop (an async handle)."""
        background = _background(self.settings)
        future = asyncio.run_coroutine_threadsafe(
            background.runtime.start_execution(self.spec, inputs, execution_id=execution_id),
            background.loop,
        )
        handle = await asyncio.wrap_future(future)
        return ExecutionHandle(handle.client, handle.id)


class Execution:
    """A synchronous handle to a running or finished execution."""

    def __init__(self, handle: ExecutionHandle, background: _Background) -> None:
        self._handle = handle
        self._background = background
        self.id = handle.id
        self.workflow_id = handle.workflow_id

    def __repr__(self) -> str:
        return f"Execution(id={self.id!r})"

    @classmethod
    def attach(cls, execution_id: str, settings: Settings | None = None) -> Execution:
        """A handle to an execution started anywhere (the API, the CLI, another process):
        status, events from an offset, result, cancel, stop, feedback.

        Raises :class:`NotFoundError` if Temporal knows no such execution.
        """
        background = _background(settings)
        client = background.run(background.runtime.start())
        handle = ExecutionHandle(client, execution_id)
        background.run(handle.ensure_exists())
        return cls(handle, background)

    def stop(self, by: str | None = None, reason: str | None = None) -> None:
        """Stop gracefully: the running task finishes, no new task starts (``stopped``)."""
        self._background.run(self._handle.stop(by=by, reason=reason))

    def waiting(self) -> list[WaitingTask]:
        """Tasks waiting for human input now: output to review, since when."""
        return self._background.run(self._handle.waiting())

    def status(self) -> ExecutionStatus:
        """State of the execution and each task."""
        return self._background.run(self._handle.status())

    def result(self, timeout: float | None = None) -> CrewWorkflowResult:
        """Wait for the end (raises ExecutionFailedError / ExecutionCancelledError)."""
        return self._background.run(self._handle.result(), timeout)

    def cancel(self) -> None:
        """Ask the execution to stop."""
        self._background.run(self._handle.cancel())

    def feedback(
        self, *, approve: bool, feedback: str | None = None, task: str | None = None
    ) -> FeedbackResult:
        """Approve a task waiting for human input, or re-run it with feedback."""
        return self._background.run(
            self._handle.feedback(approve=approve, feedback=feedback, task=task)
        )

    def events(self, from_offset: int = 0) -> Iterator[Event]:
        """Events as they happen, from ``from_offset``, until the execution ends."""
        items: queue.Queue[Any] = queue.Queue()
        done = object()

        async def pump(source: AsyncIterator[Event]) -> None:
            try:
                async for event in source:
                    items.put(event)
            except BaseException as exc:  # re-raised in the caller's thread
                items.put(exc)
            finally:
                items.put(done)

        future = asyncio.run_coroutine_threadsafe(
            pump(self._handle.events(from_offset)), self._background.loop
        )
        try:
            while (item := items.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            future.cancel()


class _Background:
    """An event loop in a daemon thread that owns the runtime, for synchronous callers."""

    def __init__(self, settings: Settings | None) -> None:
        disable_crewai_telemetry(settings)
        self.runtime = Runtime(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kasal", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_running():
            try:
                self.run(self.runtime.stop(), timeout=30)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)


_backgrounds: dict[int, _Background] = {}
_lock = threading.Lock()


def _background(settings: Settings | None) -> _Background:
    key = id(settings) if settings is not None else 0
    with _lock:
        if key not in _backgrounds:
            _backgrounds[key] = _Background(settings)
        return _backgrounds[key]


def _validated(model: type[T], data: dict[str, Any]) -> T:
    """``model`` from ``data``; a problem is one :class:`InvalidSpecError` naming the field."""
    try:
        return model.model_validate(data)  # type: ignore[attr-defined, no-any-return]
    except ValidationError as exc:
        raise InvalidSpecError.from_validation(exc) from None


def _dump(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


def _llm_data(llm: Any) -> Any:
    """A model string, Kasal's ``LLMSpec``, a mapping, or CrewAI's ``LLM(...)`` as spec data."""
    if isinstance(llm, LLMSpec):
        return llm.model_dump()
    if isinstance(llm, str | dict):
        return llm
    if hasattr(llm, "model"):  # a CrewAI LLM / BaseLLM instance
        from kasal.project import llm_spec_of

        data = llm_spec_of(llm)
        base_url = getattr(llm, "base_url", None)
        if base_url:
            data["base_url"] = str(base_url)
        max_tokens = getattr(llm, "max_tokens", None)
        if isinstance(max_tokens, int) and max_tokens > 0:
            data["max_tokens"] = max_tokens
        return data
    raise InvalidSpecError(f"llm {llm!r} is not a model string or a CrewAI LLM", field="llm")


def _schema_of(model: Any) -> dict[str, Any] | None:
    """A Pydantic class as the JSON Schema a spec carries (a schema stays as it is)."""
    if model is None or isinstance(model, dict):
        return model
    schema = getattr(model, "model_json_schema", None)
    if not callable(schema):
        raise InvalidSpecError(
            f"{model!r} is not a Pydantic model class or a JSON Schema", field="output_pydantic"
        )
    result: dict[str, Any] = schema()
    return result


def _tool_name(tool: Any) -> str:
    """Tools are named; a CrewAI tool instance is registered (for in-process workers)."""
    if isinstance(tool, str):
        return tool
    from kasal.tools import register_tool

    name = str(tool.name)
    register_tool(name, lambda: tool)
    return name
