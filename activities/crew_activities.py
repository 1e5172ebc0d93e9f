"""The activity that runs one crew task with CrewAI.

Each attempt rebuilds the CrewAI agent and task from the spec, so any worker can run any
attempt. While CrewAI works (in a thread: it is synchronous), the activity heartbeats, so a
dead worker is noticed within the heartbeat timeout, and a cancellation reaches the task
within a heartbeat. After every LLM response the activity signals its workflow with the
``llm_call`` / ``tool_call`` events and a journal entry; a retried attempt replays the
journal for identical prompts and only pays the provider past it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.manager import manager_messages, manager_spec, parse_manager_decision
from activities.models import (
    MANAGER_STEP,
    RUN_TASK,
    STASH_OUTPUTS,
    ManagerDecision,
    ManagerStepInput,
    RunTaskInput,
    RunTaskResult,
    StashOutputsInput,
    StashOutputsResult,
)
from kasal.blobs import INLINE_LIMIT, PREVIEW_CHARS, BlobStore
from kasal.constants import EVENTS_SIGNAL, JOURNAL_QUERY
from kasal.exceptions import InvalidSpecError, KasalError, ProviderError
from kasal.execution import (
    ActivityEventsInput,
    Event,
    EventType,
    JournalQueryInput,
    JournalRecord,
    TokenUsage,
)
from kasal.llm import CallContext, LLMCallRecord, LLMObserver, ObservedLLM, OfflineLLM, build_llm
from kasal.settings import disable_crewai_telemetry
from kasal.spec import AgentSpec, TaskSpec
from kasal.tools import ObservedTool, resolve_tools

log = logging.getLogger(__name__)

#: How often a running task heartbeats at most; a shorter heartbeat timeout shortens it.
HEARTBEAT_EVERY = 2.0
#: How long a cancelled task may take to stop its thread before the activity reports the
#: cancellation anyway. The thread stops at its next LLM call or tool use; an HTTP call
#: already in flight cannot be interrupted and ends within the provider timeout.
CANCEL_GRACE = 3.0
#: CrewAI joins context outputs this way when a task sees several.
CONTEXT_SEPARATOR = "\n\n----------\n\n"


class TaskCancelled(BaseException):
    """Raised inside the CrewAI thread when the workflow cancelled the task.

    A ``BaseException`` so CrewAI's ``except Exception`` handlers do not swallow it.
    """


def prompt_hash(messages: list[dict[str, Any]]) -> str:
    """A stable digest of the messages sent to an LLM."""
    canonical = json.dumps(
        [{"role": m.get("role"), "content": m.get("content")} for m in messages],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class _Publisher:
    """Sends events and journal entries to the workflow, from CrewAI's thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[ActivityEventsInput], Any],
        task: str,
        attempt: int,
        id_prefix: str,
        journal_key: str = "",
    ) -> None:
        self._key = journal_key or task
        self._loop = loop
        self._send = send
        self.task = task
        self._attempt = attempt
        self._prefix = id_prefix
        self._seq = 0
        self._lock = threading.Lock()

    def event(self, kind: EventType, agent: str | None, data: dict[str, Any]) -> Event:
        with self._lock:
            self._seq += 1
            seq = self._seq
        return Event(
            type=kind,
            timestamp=datetime.now(UTC),
            task=self.task,
            agent=agent,
            attempt=self._attempt,
            data=data,
            event_id=f"{self._prefix}-{seq}",
        )

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the activity's event loop from CrewAI's thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def send_from_thread(
        self, events: list[Event], journal: list[JournalRecord] | None = None
    ) -> None:
        batch = ActivityEventsInput(
            task=self.task,
            attempt=self._attempt,
            events=events,
            journal=journal or [],
            journal_key=self._key,
        )
        future = asyncio.run_coroutine_threadsafe(self._send(batch), self._loop)
        try:
            future.result(timeout=30)
        except Exception as exc:  # the task goes on; only its live events are late or lost
            log.warning("could not send %d event(s) to the workflow: %s", len(events), exc)


class _TaskObserver(LLMObserver):
    """Journals, reports and guards every LLM call of one task attempt."""

    def __init__(
        self,
        publisher: _Publisher,
        agent: str,
        journal: list[JournalRecord],
        cancelled: threading.Event,
        blobs: BlobStore | None = None,
    ) -> None:
        self.blobs = blobs
        self.publisher = publisher
        self.agent = agent
        self.journal = journal
        self.cancelled = cancelled
        self.calls = 0
        self.replayed = 0
        self.usage = TokenUsage()
        self._pending_hash = ""
        self._pending_tools: list[Event] = []

    def check(self) -> None:
        """Stop the task's thread here if the workflow cancelled the task."""
        if self.cancelled.is_set():
            raise TaskCancelled("task cancelled")

    def before_call(self, messages: list[dict[str, Any]]) -> str | None:
        self.check()
        digest = prompt_hash(messages)
        self._pending_hash = digest
        if self.calls < len(self.journal) and self.journal[self.calls].prompt_hash == digest:
            entry = self.journal[self.calls]
            if entry.ref is not None and self.blobs is not None:
                return self.publisher.run(self.blobs.get(entry.ref))
            return entry.response
        # Past the journal (or the prompts changed): everything after is paid for again.
        del self.journal[self.calls :]
        return None

    def after_call(self, record: LLMCallRecord, messages: list[dict[str, Any]]) -> None:
        seq = self.calls
        self.calls += 1
        data: dict[str, Any] = {
            "model": record.model,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "latency_ms": round(record.latency_ms, 2),
            "call": seq + 1,
            "replayed": record.replayed,
        }
        events = [*self._pending_tools, self.publisher.event(EventType.LLM_CALL, self.agent, data)]
        self._pending_tools = []
        if record.replayed:
            self.replayed += 1
            self.publisher.send_from_thread(events)
            return
        self.usage = self.usage + TokenUsage(
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            total_tokens=record.prompt_tokens + record.completion_tokens,
            requests=1,
        )
        entry = JournalRecord(seq=seq, prompt_hash=self._pending_hash, response=record.response)
        if self.blobs is not None and len(record.response) > INLINE_LIMIT:
            # Journaled through history: large responses go to the blob store instead.
            ref = self.publisher.run(self.blobs.put(record.response))
            entry = entry.model_copy(update={"response": "", "ref": ref})
        self.journal.append(entry)
        # Sent before CrewAI goes on: once this returns, the response is durable.
        self.publisher.send_from_thread(events, [entry])

    def on_tool(self, data: dict[str, Any]) -> None:
        self.check()
        self._pending_tools.append(self.publisher.event(EventType.TOOL_CALL, self.agent, data))

    def flush(self) -> None:
        if self._pending_tools:
            events, self._pending_tools = self._pending_tools, []
            self.publisher.send_from_thread(events)


def describe_context(context: dict[str, str]) -> str:
    """The context text a task sees, formatted the way CrewAI formats it."""
    return CONTEXT_SEPARATOR.join(context.values())


def build_crewai_task(
    task_spec: TaskSpec,
    agent_spec: AgentSpec,
    observer: _TaskObserver,
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
        ObservedTool.wrap(tool, observer.on_tool)
        for tool in resolve_tools(list(dict.fromkeys(agent_spec.tools + task_spec.tools)))
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


def as_application_error(exc: BaseException) -> ApplicationError:
    """A Temporal error that tells the retry policy whether trying again can help."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, KasalError):
            retryable = isinstance(cause, ProviderError) and cause.retryable
            if isinstance(cause, InvalidSpecError):
                retryable = False
            retry_after = getattr(cause, "retry_after", None)
            return ApplicationError(
                str(cause),
                {"retry_after": retry_after},
                type=cause.code,
                non_retryable=not retryable,
                # A provider that says when to come back is obeyed over the backoff.
                next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
            )
        cause = cause.__cause__ or cause.__context__
    return ApplicationError(f"{type(exc).__name__}: {exc}", type=type(exc).__name__)


class CrewActivities:
    """Activities that run crew work. Built once per worker."""

    def __init__(
        self,
        executor: concurrent.futures.ThreadPoolExecutor | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        # CrewAI is synchronous: each running task holds one thread of this pool.
        self._executor = executor
        #: Where outputs too large for workflow history go (None: they stay inline).
        self._blobs = blobs
        disable_crewai_telemetry()
        _quiet_crewai()
        _reuse_executor_state_class()

    @activity.defn(name=RUN_TASK)
    async def run_task(self, data: RunTaskInput) -> RunTaskResult:
        """Run one task of a crew (or one delegation of a hierarchical task) with CrewAI."""
        try:
            task_spec = next(t for t in data.spec.tasks if t.name == data.task)
            agent_spec = data.spec.agent(data.agent_override or task_spec.agent)
        except (StopIteration, KeyError) as exc:
            raise ApplicationError(
                f"task {data.task!r} or its agent is not in crew {data.spec.name!r}",
                type=InvalidSpecError.code,
                non_retryable=True,
            ) from exc
        if data.description_override is not None:
            task_spec = task_spec.model_copy(
                update={
                    "description": data.description_override,
                    "expected_output": data.expected_output_override or task_spec.expected_output,
                    "name": f"{task_spec.name}-delegated",
                }
            )

        context = dict(data.context)
        if data.context_refs:
            if self._blobs is None:
                raise ApplicationError(
                    "this worker has no blob store to read large context outputs from",
                    type="blob_store_missing",
                )
            for name, ref in data.context_refs.items():
                context[name] = await self._blobs.get(ref)

        def work(observer: _TaskObserver, attempt: int) -> str:
            agent, task, tools = build_crewai_task(
                task_spec,
                agent_spec,
                observer,
                CallContext(attempt=attempt),
                data.feedback,
                data.previous_output,
            )
            output = task.execute_sync(
                agent=agent, context=describe_context(context) or None, tools=tools
            )
            return str(output.raw)

        raw, observer, attempt = await self._observed(data.task, agent_spec.name, work)
        ref = size = None
        if self._blobs is not None and len(raw) > INLINE_LIMIT:
            ref, size = await self._blobs.put(raw), len(raw)
            raw = raw[:PREVIEW_CHARS]
        return RunTaskResult(
            ref=ref,
            size=size,
            raw=raw,
            token_usage=observer.usage,
            llm_calls=observer.calls - observer.replayed,
            replayed_calls=observer.replayed,
            attempt=attempt,
        )

    @activity.defn(name=MANAGER_STEP)
    async def manager_step(self, data: ManagerStepInput) -> ManagerDecision:
        """One decision of a hierarchical crew's manager: delegate to a coworker, or answer."""
        manager = manager_spec(data.spec)
        task_spec = next(t for t in data.spec.tasks if t.name == data.task)
        # The manager reads whole outputs, including those kept outside history.
        context = dict(data.context)
        history = list(data.history)
        if self._blobs is not None:
            for name, ref in data.context_refs.items():
                context[name] = await self._blobs.get(ref)
            history = [
                h.model_copy(update={"result": await self._blobs.get(h.ref)}) if h.ref else h
                for h in history
            ]

        def work(observer: _TaskObserver, attempt: int) -> str:
            inner = build_llm(manager.llm)
            if isinstance(inner, OfflineLLM):
                # A scripted offline manager continues its script where the last step ended.
                inner.bind(CallContext(attempt=attempt, offset=data.step), observer.check)
            llm = ObservedLLM.wrap(inner, observer)
            messages = manager_messages(
                data.spec, manager, task_spec, context, history, data.correction
            )
            return str(llm.call(messages))

        raw, observer, attempt = await self._observed(data.task, manager.name, work)
        decision = parse_manager_decision(raw, [a.name for a in data.spec.agents])
        if decision.action != "invalid":
            decision.raw = ""  # the parsed fields say it all; history need not hold it twice
        decision.token_usage = observer.usage
        decision.attempt = attempt
        return decision

    @activity.defn(name=STASH_OUTPUTS)
    async def stash_outputs(self, data: StashOutputsInput) -> StashOutputsResult:
        """Store outputs as blobs so the next run of a long crew carries only their ids."""
        if self._blobs is None:
            return StashOutputsResult()
        return StashOutputsResult(
            refs={name: await self._blobs.put(text) for name, text in data.texts.items()}
        )

    async def _observed(
        self,
        task: str,
        agent: str,
        work: Callable[[_TaskObserver, int], str],
    ) -> tuple[str, _TaskObserver, int]:
        """Run ``work`` in a thread: heartbeat, journal, events, cancellation, error mapping."""
        info = activity.info()
        handle = activity.client().get_workflow_handle(
            info.workflow_id or "", run_id=info.workflow_run_id
        )

        async def send(batch: ActivityEventsInput) -> None:
            await handle.signal(EVENTS_SIGNAL, batch)

        every = HEARTBEAT_EVERY
        if info.heartbeat_timeout:
            every = min(every, max(info.heartbeat_timeout.total_seconds() / 3, 0.2))
        progress = [0]

        async def beat() -> None:
            # From the first moment: reading the journal may wait for a workflow worker.
            while True:
                activity.heartbeat(progress[0])
                await asyncio.sleep(every)

        heart = asyncio.create_task(beat())
        try:
            attempt = info.attempt
            key = info.activity_id
            journal = await _fetch_journal(handle, key) if attempt > 1 else []
            publisher = _Publisher(
                asyncio.get_running_loop(),
                send,
                task,
                attempt,
                f"{key}-a{attempt}-{uuid.uuid4().hex[:8]}",
                key,
            )
            if attempt > 1:
                await send(
                    ActivityEventsInput(
                        task=task,
                        attempt=attempt,
                        journal_key=key,
                        events=[
                            publisher.event(
                                EventType.TASK_STARTED,
                                agent,
                                {"journaled_calls": len(journal), "resumed": True, "step": key},
                            )
                        ],
                    )
                )
            cancelled = threading.Event()
            observer = _TaskObserver(publisher, agent, journal, cancelled, self._blobs)

            def run() -> str:
                try:
                    return work(observer, attempt)
                finally:
                    observer.flush()

            future = asyncio.get_running_loop().run_in_executor(self._executor, run)
            try:
                while not future.done():
                    progress[0] = observer.calls
                    await asyncio.wait({future}, timeout=0.5)
                return future.result(), observer, attempt
            except asyncio.CancelledError:
                # Stop CrewAI at its next LLM call or tool use, then report the cancellation.
                cancelled.set()
                await asyncio.wait({future}, timeout=CANCEL_GRACE)
                # The thread ends with TaskCancelled (now or after its HTTP call): expected.
                future.add_done_callback(lambda f: f.cancelled() or f.exception())
                raise
            except TaskCancelled as exc:
                raise asyncio.CancelledError() from exc
            except Exception as exc:
                error = as_application_error(exc)
                await self._report_failure(publisher, send, agent, error, info)
                raise error from None  # provider chains can be cyclic; the message says it
        finally:
            heart.cancel()

    @staticmethod
    async def _report_failure(
        publisher: _Publisher,
        send: Callable[[ActivityEventsInput], Any],
        agent: str,
        error: ApplicationError,
        info: activity.Info,
    ) -> None:
        """Say that this attempt failed and whether (and when) Temporal will retry it."""
        policy = info.retry_policy
        max_attempts = policy.maximum_attempts if policy else 0
        will_retry = not error.non_retryable and (max_attempts == 0 or info.attempt < max_attempts)
        if policy and policy.non_retryable_error_types and error.type:
            will_retry = will_retry and error.type not in policy.non_retryable_error_types
        if not will_retry:
            return
        delay = _next_delay(policy, info.attempt)
        event = publisher.event(
            EventType.TASK_RETRYING,
            agent,
            {
                "error": str(error.message),
                "error_type": error.type,
                "next_attempt": info.attempt + 1,
                "max_attempts": max_attempts or None,
                "retry_in_seconds": delay,
            },
        )
        try:
            await send(
                ActivityEventsInput(
                    task=publisher.task,
                    attempt=info.attempt,
                    events=[event],
                    journal_key=info.activity_id,
                )
            )
        except Exception as exc:
            log.warning("could not report the retry: %s", exc)


def _next_delay(policy: Any, attempt: int) -> float | None:
    if policy is None:
        return None
    initial = policy.initial_interval or timedelta(seconds=1)
    delay = initial.total_seconds() * (policy.backoff_coefficient ** (attempt - 1))
    if policy.maximum_interval:
        delay = min(delay, policy.maximum_interval.total_seconds())
    return round(delay, 3)


async def _fetch_journal(handle: Any, task: str) -> list[JournalRecord]:
    """The responses earlier attempts of this task already paid for."""
    try:
        return list(
            await handle.query(
                JOURNAL_QUERY,
                JournalQueryInput(task=task),
                result_type=list[JournalRecord],
                rpc_timeout=timedelta(seconds=60),
            )
        )
    except Exception as exc:  # no journal is never wrong, only more expensive
        log.warning("could not read the journal of %s: %s", task, exc)
        return []


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
