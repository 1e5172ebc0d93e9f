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
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from kasal.client import ExecutionHandle, Runtime
from kasal.exceptions import InvalidSpecError
from kasal.execution import (
    CrewWorkflowResult,
    Event,
    ExecutionStatus,
    FeedbackResult,
    WaitingTask,
)
from kasal.settings import Settings, disable_crewai_telemetry
from kasal.spec import AgentSpec, CrewSpec, LLMSpec, RetrySpec, TaskSpec, TimeoutSpec, slug

T = TypeVar("T")


class Agent:
    """An agent: role, goal, backstory, an LLM (``model="openai/gpt-4o"``) and tool names."""

    def __init__(
        self,
        role: str,
        goal: str,
        backstory: str = "",
        *,
        model: str | None = None,
        llm: LLMSpec | dict[str, Any] | str | None = None,
        tools: list[Any] | None = None,
        name: str | None = None,
        max_iter: int = 15,
    ) -> None:
        data: dict[str, Any] = {
            "name": name or slug(role),
            "role": role,
            "goal": goal,
            "backstory": backstory,
            "tools": [_tool_name(t) for t in tools or []],
            "max_iter": max_iter,
        }
        if isinstance(llm, LLMSpec):
            data["llm"] = llm.model_dump()
        elif llm is not None:
            data["llm"] = llm
        if model is not None:
            data["model"] = model
        try:
            self.spec = AgentSpec.model_validate(data)
        except ValidationError as exc:
            raise InvalidSpecError.from_validation(exc) from None

    @property
    def name(self) -> str:
        """The agent's name in the crew spec."""
        return self.spec.name


class Task:
    """A task: what to do and which agent does it; ``context`` lists tasks whose output it sees."""

    def __init__(
        self,
        description: str,
        expected_output: str,
        agent: Agent,
        *,
        name: str | None = None,
        context: list[Task] | None = None,
        async_execution: bool = False,
        human_input: bool = False,
        tools: list[Any] | None = None,
        retry: RetrySpec | dict[str, Any] | None = None,
        timeout: TimeoutSpec | dict[str, Any] | None = None,
    ) -> None:
        self.description = description
        self.expected_output = expected_output
        self.agent = agent
        self.name = name
        self.context = context
        self.async_execution = async_execution
        self.human_input = human_input
        self.tools = [_tool_name(t) for t in tools or []]
        self.retry = retry
        self.timeout = timeout

    def to_spec(self, name: str) -> TaskSpec:
        """The task as spec data, called ``name``."""
        return _validated(
            TaskSpec,
            {
                "name": name,
                "description": self.description,
                "expected_output": self.expected_output,
                "agent": self.agent.name,
                "context": None if self.context is None else [t.name for t in self.context],
                "async_execution": self.async_execution,
                "human_input": self.human_input,
                "tools": self.tools,
                "retry": _dump(self.retry),
                "timeout": _dump(self.timeout),
            },
        )


class Crew:
    """A crew of agents and tasks. ``kickoff`` runs it as a durable Temporal workflow."""

    def __init__(
        self,
        agents: list[Agent],
        tasks: list[Task],
        *,
        process: Literal["sequential", "hierarchical"] = "sequential",
        name: str = "crew",
        manager_llm: LLMSpec | dict[str, Any] | str | None = None,
        retry: RetrySpec | dict[str, Any] | None = None,
        timeout: TimeoutSpec | dict[str, Any] | None = None,
        settings: Settings | None = None,
    ) -> None:
        for index, task in enumerate(tasks):
            task.name = task.name or f"task_{index + 1}"
        manager = {"model": manager_llm} if isinstance(manager_llm, str) else _dump(manager_llm)
        data: dict[str, Any] = {
            "name": name,
            "process": process,
            "agents": [a.spec.model_dump() for a in agents],
            "tasks": [t.to_spec(t.name or "").model_dump() for t in tasks],
            "manager_llm": manager,
        }
        if retry is not None:
            data["retry"] = _dump(retry)
        if timeout is not None:
            data["timeout"] = _dump(timeout)
        self.spec = CrewSpec.from_data(data)
        self.settings = settings

    @classmethod
    def from_spec(cls, spec: CrewSpec, settings: Settings | None = None) -> Crew:
        """A crew from spec data (YAML, JSON, the API)."""
        crew = cls.__new__(cls)
        crew.spec = spec
        crew.settings = settings
        return crew

    @classmethod
    def from_file(cls, path: str | Path, settings: Settings | None = None) -> Crew:
        """A crew from a YAML or JSON spec file."""
        return cls.from_spec(CrewSpec.from_file(path), settings)

    # -- running -------------------------------------------------------------------------

    def kickoff(self, inputs: dict[str, Any] | None = None) -> CrewWorkflowResult:
        """Run the crew durably and wait for its result."""
        return self.start(inputs).result()

    def start(
        self, inputs: dict[str, Any] | None = None, *, execution_id: str | None = None
    ) -> Execution:
        """Start the crew; returns at once with a handle to the running execution."""
        background = _background(self.settings)
        handle = background.run(
            background.runtime.start_execution(self.spec, inputs, execution_id=execution_id)
        )
        return Execution(handle, background)

    async def kickoff_async(self, inputs: dict[str, Any] | None = None) -> CrewWorkflowResult:
        """``kickoff`` for code that already runs an event loop."""
        return await (await self.start_async(inputs)).result()

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


def _tool_name(tool: Any) -> str:
    """Tools are named; a CrewAI tool instance is registered (for in-process workers)."""
    if isinstance(tool, str):
        return tool
    from kasal.tools import register_tool

    name = str(tool.name)
    register_tool(name, lambda: tool)
    return name
