"""The activities that run crew work with CrewAI: a task, a manager's decision, stashing.

Each attempt runs under :func:`activities.journal.run_observed`: CrewAI in a thread,
heartbeats, every LLM call journaled in the app database and replayed by a retried attempt,
events signed and sent to the workflow, cancellation within about a heartbeat.
"""

from __future__ import annotations

import concurrent.futures

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.crewai_runtime import (
    TaskRun,
    build_task,
    describe_context,
    execute_task,
    prepare_crewai,
)
from activities.journal import (
    AttemptWatch,
    ComputeSlots,
    ObservedLLM,
    TaskObserver,
    as_application_error,
    run_observed,
)
from activities.manager import manager_messages, manager_spec, parse_manager_decision
from activities.memory import TaskMemory
from activities.models import (
    MANAGER_STEP,
    PLAN_CREW,
    RUN_TASK,
    STASH_OUTPUTS,
    ManagerDecision,
    ManagerStepInput,
    PlanCrewInput,
    PlanCrewResult,
    RunTaskInput,
    RunTaskResult,
    StashOutputsInput,
    StashOutputsResult,
)
from activities.planning import PLANNER_KEY, make_plan
from kasal.blobs import INLINE_LIMIT, PREVIEW_CHARS, BlobStore
from kasal.callables import resolve_callable
from kasal.db.journal import JournalStore
from kasal.exceptions import InvalidSpecError, KasalError
from kasal.llm import CallContext, OfflineLLM, build_llm
from kasal.memory import MemoryStore
from kasal.settings import disable_crewai_telemetry


class CrewActivities:
    """Activities that run crew work. Built once per worker."""

    def __init__(
        self,
        journal: JournalStore,
        executor: concurrent.futures.Executor | None = None,
        blobs: BlobStore | None = None,
        memory: MemoryStore | None = None,
        slots: ComputeSlots | None = None,
        heartbeats_per_second: float | None = None,
        cancels_pushed: bool | None = None,
    ) -> None:
        #: Where attempts journal the calls they paid for.
        self._journal = journal
        #: Whether a newer attempt of any running attempt has started: one query for all.
        self._watch = AttemptWatch(journal, heartbeats_per_second, cancels_pushed)
        #: How many attempts may run CrewAI's own code at once (None: no limit).
        self._slots = slots
        # CrewAI is synchronous: each running task holds one thread of this pool.
        self._executor = executor
        #: Where outputs too large for workflow history go (None: they stay inline).
        self._blobs = blobs
        #: Crews' memory and knowledge (None: crews that use them cannot run here).
        self._memory = memory
        disable_crewai_telemetry()
        prepare_crewai()

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
            for name, blob_id in data.context_refs.items():
                context[name] = await self._blobs.get(blob_id)

        runs: list[TaskRun] = []

        memory = None
        if self._memory is not None:
            try:
                memory = await TaskMemory.prepare(
                    self._memory, data.spec, agent_spec, crew_id=data.crew_id, owner=data.owner
                )
            except KasalError as exc:
                raise as_application_error(exc) from None

        def work(observer: TaskObserver, attempt: int) -> str:
            spec_for_task = task_spec
            if memory is not None:
                query = "\n".join([task_spec.description, *context.values()])
                if extra := memory.recall(observer, query):
                    spec_for_task = task_spec.model_copy(
                        update={"description": task_spec.description + extra}
                    )
            built = build_task(
                spec_for_task,
                agent_spec,
                observer,
                CallContext(attempt=attempt),
                data.feedback,
                data.previous_output,
                spec=data.spec,
                plan=data.plan,
            )
            task_callback = built.extra.get("task_callback")
            if task_callback is None and data.spec.task_callback_callable:
                task_callback = resolve_callable(data.spec.task_callback_callable, "task_callback")
            run = execute_task(built, describe_context(context) or None, task_callback)
            runs.append(run)
            return run.raw

        done = await run_observed(
            self._watch, self._executor, data.task, agent_spec.name, work, self._slots
        )
        raw, observer = done.raw, done.observer
        run = runs[-1] if runs else TaskRun(raw=raw, json_dict=None, output_format="raw")
        if memory is not None:
            await memory.remember(
                execution_id=data.execution_id,
                step=activity.info().activity_id,
                task=task_spec,
                agent=agent_spec,
                output=raw,
            )
        ref: str | None = None
        size: int | None = None
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
            attempt=done.attempt,
            events=done.events,
            json_dict=run.json_dict,
            output_format=run.output_format,
            output_file=run.output_file,
        )

    @activity.defn(name=PLAN_CREW)
    async def plan_crew(self, data: PlanCrewInput) -> PlanCrewResult:
        """CrewAI's crew planning, as its own activity: the plan is made once (its LLM calls
        journaled like a task's), and the workflow gives each task its part."""
        plans: dict[str, str] = {}

        def work(observer: TaskObserver, attempt: int) -> str:
            plans.update(make_plan(data.spec, observer, CallContext(attempt=attempt)))
            return ""

        done = await run_observed(
            self._watch, self._executor, PLANNER_KEY, "planner", work, self._slots
        )
        return PlanCrewResult(
            plans=plans, token_usage=done.observer.usage, attempt=done.attempt, events=done.events
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

        def work(observer: TaskObserver, attempt: int) -> str:
            inner = build_llm(manager.llm)
            if isinstance(inner, OfflineLLM):
                # A scripted offline manager continues its script where the last step ended.
                inner.bind(CallContext(attempt=attempt, offset=data.step), observer.check)
            llm = ObservedLLM.wrap(inner, observer)
            messages = manager_messages(
                data.spec, manager, task_spec, context, history, data.correction
            )
            return str(llm.call(messages))

        done = await run_observed(
            self._watch, self._executor, data.task, manager.name, work, self._slots
        )
        decision = parse_manager_decision(done.raw, [a.name for a in data.spec.agents])
        if decision.action != "invalid":
            decision.raw = ""  # the parsed fields say it all; history need not hold it twice
        decision.token_usage = done.observer.usage
        decision.attempt = done.attempt
        decision.events = done.events
        return decision

    @activity.defn(name=STASH_OUTPUTS)
    async def stash_outputs(self, data: StashOutputsInput) -> StashOutputsResult:
        """Store outputs as blobs so the next run of a long crew carries only their ids."""
        if self._blobs is None:
            return StashOutputsResult()
        return StashOutputsResult(
            refs={name: await self._blobs.put(text) for name, text in data.texts.items()}
        )
