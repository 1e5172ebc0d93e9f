"""``CrewWorkflow``: one crew kickoff, durable.

Deterministic orchestration only. Each task runs as one ``run_task`` activity; the workflow
passes context between tasks, runs ``async_execution`` tasks in parallel until the next
synchronous task, owns the execution's ordered event stream, answers status and trace
queries, keeps each running task's LLM journal, and waits for human feedback through an
update when a task asks for it.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RetryPolicy, SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        MANAGER_STEP,
        PLAN_CREW,
        RECORD_EXECUTION,
        RUN_TASK,
        STASH_OUTPUTS,
        DelegationRecord,
        ManagerDecision,
        ManagerStepInput,
        PlanCrewInput,
        PlanCrewResult,
        RecordExecutionInput,
        RunTaskInput,
        RunTaskResult,
        StashOutputsInput,
        StashOutputsResult,
    )
    from kasal import signing, webui
    from kasal.constants import (
        CREW_WORKFLOW,
        EVENTS_SIGNAL,
        EVENTS_TOPIC,
        FEEDBACK_UPDATE,
        OUTPUTS_QUERY,
        SA_CREW_NAME,
        SA_STATUS,
        STATUS_QUERY,
        STOP_SIGNAL,
        TRACE_QUERY,
        WAITING_QUERY,
        WEBHOOK_WORKFLOW,
    )
    from kasal.exceptions import InvalidSpecError
    from kasal.execution import (
        ActivityEventsInput,
        CrewResumeState,
        CrewWorkflowInput,
        CrewWorkflowResult,
        Event,
        EventType,
        ExecutionState,
        ExecutionStatus,
        FeedbackInput,
        FeedbackResult,
        ReplaySeed,
        StopInput,
        TaskOutput,
        TaskState,
        TaskStatus,
        TokenUsage,
        TraceQueryInput,
        WaitingTask,
        WebhookDeliveryInput,
    )
    from kasal.spec import CrewSpec, TaskSpec

from workflows.bookkeeping import ExecutionBook

#: Errors that no retry can fix; also marked non-retryable by the activity itself.
NON_RETRYABLE = ["invalid_spec", "unknown_tool", "unknown_model", "provider_auth"]
#: How much of a task's output the status query shows.
SUMMARY_CHARS = 300
#: Outputs longer than this move to blobs before a continue-as-new.
STASH_OVER_CHARS = 1000

#: Patch id: from this change on, events from activities must be signed by a worker.
SIGNED_EVENTS_PATCH = "signed-activity-events"
#: From here on the execution is recorded by a local activity that is given the trace.
LOCAL_RECORD_PATCH = "record-as-local-activity"

STATUS_KEY = SearchAttributeKey.for_keyword(SA_STATUS)
CREW_NAME_KEY = SearchAttributeKey.for_keyword(SA_CREW_NAME)


class TaskFailed(Exception):
    """A task failed for good (retries exhausted or not retryable)."""

    def __init__(self, task: str, message: str, error_type: str | None) -> None:
        super().__init__(message)
        self.task = task
        self.message = message
        self.error_type = error_type


@workflow.defn(name=CREW_WORKFLOW)
class CrewWorkflow:
    """Runs a crew: every task an activity, every step an event."""

    @workflow.init
    def __init__(self, data: CrewWorkflowInput) -> None:
        resume = data.resume
        self._stream = WorkflowStream(resume.stream if resume else None)
        self._topic = self._stream.topic(EVENTS_TOPIC, type=Event)
        self._waiting: dict[str, FeedbackInput | None] = {}
        self._runs: dict[str, int] = {}
        self._owner = data.owner
        self._outputs: dict[str, TaskOutput] = {}
        self._generation = 0
        self._signed_events = True
        #: LLM calls reported per task (for the Web UI's current details).
        self._llm_calls: dict[str, int] = {}
        #: Resets seen in the history and not marked in the trace yet.
        self._resets_pending = 0
        #: The crew's plan per task (``planning``), made once per execution.
        self._plans: dict[str, str] | None = None
        self._stop: StopInput | None = None
        self._waiting_info: dict[str, WaitingTask] = {}
        self._webhooks = list(data.webhooks)
        self._deliveries: list[asyncio.Task[None]] = []
        self._execution_id = data.execution_id
        status = ExecutionStatus(
            execution_id=data.execution_id,
            crew_name=data.spec.name,
            crew_id=data.crew_id,
            state=ExecutionState.PENDING,
            tasks=[TaskStatus(name=t.name, agent=t.agent) for t in data.spec.tasks],
            replay_of=data.seed.from_execution if data.seed else None,
            replay_from_task=data.seed.from_task if data.seed else None,
        )
        events: list[Event] = []
        if resume is not None:
            status = resume.status
            # The stream state already carries every event: read them back rather than
            # carrying them twice (the next run's input must stay under 2 MB).
            stream_log = resume.stream.log if resume.stream is not None else None
            events = [_event_from_wire(i.data) for i in (stream_log or [])]
            self._outputs = dict(resume.outputs)
            self._runs = dict(resume.runs)
            self._generation = resume.generation + 1
            self._plans = dict(resume.plans) if resume.plans is not None else None
            self._stop = resume.stop
        self._book = ExecutionBook(
            status,
            events,
            publish=self._topic.publish,
            history_position=lambda: workflow.info().get_current_history_length(),
        )
        #: Events the workflow emitted itself (not reports of activities): what numbers a
        #: webhook event id. Reports count in offsets but are accepted only with a valid
        #: signature, so ids made of offsets would depend on the workers' secret on replay.
        self._own_events = sum(1 for e in events if e.event_id.startswith("wf-"))
        # Core hands the workflow a new random seed exactly when its history shows a reset
        # (WorkflowTaskFailed, cause ResetWorkflow): a deterministic place to mark it.
        workflow.register_random_seed_callback(self._on_reset)
        _describe_stream_handlers()

    @property
    def _status(self) -> ExecutionStatus:
        return self._book.status

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, data: CrewWorkflowInput) -> CrewWorkflowResult:
        # Histories from before signed events accept unsigned ones: what a workflow streamed
        # must not change when it replays (subscribers' polls complete on it).
        self._signed_events = workflow.patched(SIGNED_EVENTS_PATCH)
        resumed = data.resume is not None
        self._reset_watcher = asyncio.create_task(self._watch_resets())
        self._status.started_at = self._status.started_at or workflow.now()
        self._set_state(ExecutionState.RUNNING)
        try:
            spec = data.spec.interpolated(data.inputs)
        except InvalidSpecError as exc:
            self._status.error = str(exc)
            self._emit(EventType.EXECUTION_FAILED, data={"error": str(exc)})
            await self._finish(ExecutionState.FAILED)
            raise ApplicationError(str(exc), type=exc.code, non_retryable=True) from exc
        if not resumed:
            started: dict[str, Any] = {
                "crew": spec.name,
                "tasks": [t.name for t in spec.tasks],
                "inputs": spec.inputs,
            }
            if data.seed is not None:
                started["replay_of"] = data.seed.from_execution
                started["from_task"] = data.seed.from_task
            self._emit(EventType.EXECUTION_STARTED, data=started)
            if data.seed is not None:
                self._reuse_seeded(spec, data.seed)
        outputs = self._outputs
        try:
            if spec.planning and self._plans is None:
                await self._plan(data.execution_id, spec)
            pending: list[asyncio.Task[None]] = []
            done_this_run = 0
            for index, task in enumerate(spec.tasks):
                if task.name in outputs:
                    continue  # finished in an earlier run
                if self._stop is not None:
                    break  # a graceful stop: the running tasks finish, no new one starts
                step = self._run_task(data.execution_id, spec, index, outputs)
                if task.async_execution:
                    pending.append(asyncio.create_task(step))
                    continue
                await self._gather(pending)
                done_this_run += len(pending) + 1
                pending = []
                await step
                if (
                    index + 1 < len(spec.tasks)
                    and self._stop is None
                    and self._should_continue_as_new(data, done_this_run)
                ):
                    await self._continue_as_new(data)
            await self._gather(pending)
        except TaskFailed as exc:
            self._fail_task(exc)
            self._cancel_unfinished()
            self._status.error = f"task {exc.task!r} failed: {exc.message}"
            self._emit(
                EventType.EXECUTION_FAILED,
                task=exc.task,
                data={"error": self._status.error, "error_type": exc.error_type},
            )
            await self._finish(ExecutionState.FAILED)
            raise ApplicationError(
                self._status.error, type=exc.error_type or "task_failed", non_retryable=True
            ) from None
        except (asyncio.CancelledError, CancelledError):
            self._cancel_unfinished()
            self._emit(EventType.EXECUTION_CANCELLED, data={})
            await self._finish(ExecutionState.CANCELLED)
            raise
        if self._stop is not None and any(t.name not in outputs for t in spec.tasks):
            return await self._stopped(data, spec)
        last = spec.tasks[-1].name
        result = CrewWorkflowResult(
            execution_id=data.execution_id,
            output=outputs[last].raw,
            output_ref=outputs[last].ref,
            tasks=[outputs[t.name] for t in spec.tasks],
            token_usage=self._status.token_usage,
            json_dict=outputs[last].json_dict,
        )
        self._emit(
            EventType.EXECUTION_COMPLETED,
            data={
                "output": result.output[:SUMMARY_CHARS],
                "token_usage": result.token_usage.model_dump(),
            },
        )
        await self._finish(ExecutionState.COMPLETED, result)
        return result

    def _reuse_seeded(self, spec: CrewSpec, seed: ReplaySeed) -> None:
        """A replay: every task before ``seed.from_task`` keeps the original's output.

        Nothing runs for them (no activity, so no LLM or tool call); each is marked reused
        in its status and by a ``task_reused`` event that names where the output came from.
        """
        now = workflow.now()
        for task in spec.tasks:
            if task.name == seed.from_task:
                break
            kept = seed.outputs.get(task.name)
            if kept is None:
                continue  # the caller checked: every earlier task has an output
            self._outputs[task.name] = kept
            status = self._book.task(task.name)
            status.state = TaskState.COMPLETED
            status.reused_from = seed.from_execution
            status.started_at = status.ended_at = now
            status.output_summary = kept.raw[:SUMMARY_CHARS]
            self._emit(
                EventType.TASK_REUSED,
                task=task.name,
                agent=task.agent,
                data={
                    "from_execution": seed.from_execution,
                    "output": kept.raw[:SUMMARY_CHARS],
                    "ref": kept.ref,
                },
            )

    def _on_reset(self, _seed: int) -> None:
        """The history shows a reset: a new run goes on from here (same execution).

        Called while the activation's jobs are applied, outside the workflow's event loop
        (no clock there): the marker is emitted before the next event, or by
        ``_watch_resets`` if nothing else happens.
        """
        self._resets_pending += 1

    def _flush_resets(self) -> None:
        while self._resets_pending:
            self._resets_pending -= 1
            self._status.resets += 1
            self._own_events += 1  # a workflow event too (webhook ids count them)
            self._book.emit(
                EventType.EXECUTION_RESET,
                workflow.now(),
                data={
                    "run_id": workflow.info().run_id,
                    "reset_number": self._status.resets,
                    # The record activity adds the base run, the reason and the superseded
                    # events once the run ends (only the history knows them).
                },
            )

    async def _watch_resets(self) -> None:
        """Marks a reset at once even while the workflow waits (no other event comes)."""
        while True:
            await workflow.wait_condition(lambda: self._resets_pending > 0)
            self._flush_resets()
            self._show_details()

    async def _plan(self, execution_id: str, spec: CrewSpec) -> None:
        """CrewAI's planning, once, as its own activity: each task gets its plan."""
        first = spec.tasks[0]
        self._emit(EventType.PLANNING_STARTED, data={"tasks": len(spec.tasks)})
        try:
            result: PlanCrewResult = await self._call(
                spec,
                first,
                PLAN_CREW,
                PlanCrewInput(execution_id=execution_id, spec=spec),
                PlanCrewResult,
                activity_id="planning",
                summary=f"Planner: plan {len(spec.tasks)} tasks",
            )
        except TaskFailed as exc:
            # The first task cannot start without the plan: it fails, saying why.
            raise TaskFailed(exc.task, f"planning failed: {exc.message}", exc.error_type) from None
        self._plans = dict(result.plans)
        self._emit(
            EventType.PLANNING_COMPLETED,
            data={
                "plans": {k: v[:SUMMARY_CHARS] for k, v in self._plans.items()},
                "token_usage": result.token_usage.model_dump(),
            },
        )

    async def _stopped(self, data: CrewWorkflowInput, spec: CrewSpec) -> CrewWorkflowResult:
        """End after a graceful stop: what finished is the result, the rest never started."""
        outputs = self._outputs
        done = [outputs[t.name] for t in spec.tasks if t.name in outputs]
        skipped = [t.name for t in spec.tasks if t.name not in outputs]
        self._cancel_unfinished()
        result = CrewWorkflowResult(
            execution_id=data.execution_id,
            output=done[-1].raw if done else "",
            output_ref=done[-1].ref if done else None,
            tasks=done,
            token_usage=self._status.token_usage,
            stopped=True,
        )
        assert self._stop is not None
        self._emit(
            EventType.EXECUTION_STOPPED,
            data={
                "by": self._stop.by,
                "reason": self._stop.reason,
                "completed_tasks": [t.name for t in done],
                "not_started": skipped,
            },
        )
        await self._finish(ExecutionState.STOPPED, result)
        return result

    def _cancel_unfinished(self) -> None:
        """Every task that did not finish is cancelled (the execution is over)."""
        self._book.cancel_unfinished(workflow.now())

    def _should_continue_as_new(self, data: CrewWorkflowInput, done_this_run: int) -> bool:
        """Between tasks (nothing running): is it time to start a fresh history?"""
        if data.tasks_per_run is not None and done_this_run >= data.tasks_per_run:
            return True
        info = workflow.info()
        # Temporal suggests it near its limits; a history of 8 MB is already slow to replay.
        return info.is_continue_as_new_suggested() or info.get_current_history_size() > 8 << 20

    async def _continue_as_new(self, data: CrewWorkflowInput) -> None:
        """Carry outputs, status and the event stream into a new run (same workflow id)."""
        await self._stash_outputs()
        self._emit(
            EventType.EXECUTION_CONTINUED,
            data={"generation": self._generation + 1, "completed_tasks": len(self._outputs)},
        )

        def next_input(stream_state: Any) -> list[Any]:
            resume = CrewResumeState(
                outputs=self._outputs,
                status=self._status,
                runs=self._runs,
                stream=stream_state,
                generation=self._generation,
                plans=self._plans,
                stop=self._stop,
            )
            return [data.model_copy(update={"resume": resume})]

        await self._stream.continue_as_new(next_input)

    async def _stash_outputs(self) -> None:
        """Move inline outputs above a kilobyte to blobs: the next run's input stays small
        (hundreds of tasks of 16 kB outputs would not fit its 2 MB limit)."""
        big = {
            name: out.raw
            for name, out in self._outputs.items()
            if out.ref is None and len(out.raw) > STASH_OVER_CHARS
        }
        if not big:
            return
        stashed = await workflow.execute_activity(
            STASH_OUTPUTS,
            StashOutputsInput(texts=big),
            result_type=StashOutputsResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10)),
            summary="stash outputs before continue-as-new",
        )
        for name, ref in stashed.refs.items():
            text = big[name]
            self._outputs[name] = self._outputs[name].model_copy(
                update={"ref": ref, "size": len(text), "raw": text[:SUMMARY_CHARS]}
            )

    async def _gather(self, pending: list[asyncio.Task[None]]) -> None:
        if not pending:
            return
        try:
            await asyncio.gather(*pending)
        except BaseException:
            # Stop the siblings and wait until they have stopped: none may keep running
            # (or keep reporting) after the execution has ended.
            for step in pending:
                step.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise

    async def _run_task(
        self, execution_id: str, spec: CrewSpec, index: int, outputs: dict[str, TaskOutput]
    ) -> None:
        task = spec.tasks[index]
        status = self._status.tasks[index]
        context: dict[str, str] = {}
        context_refs: dict[str, str] = {}
        for name in spec.context_for(index):
            # An async task the current one depends on may still run: CrewAI waits for it.
            await workflow.wait_condition(lambda n=name: n in outputs)  # type: ignore[misc]
            context[name] = outputs[name].raw
            if outputs[name].ref:
                context_refs[name] = outputs[name].ref  # type: ignore[assignment]
        feedback: str | None = None
        previous: str | None = None
        attempts = 0
        usage = TokenUsage()
        while True:
            self._book.task_running(task.name, workflow.now())
            self._emit(
                EventType.TASK_STARTED,
                task=task.name,
                agent=task.agent,
                attempt=1,
                data={
                    "description": task.description[:SUMMARY_CHARS],
                    "rerun": feedback is not None,
                },
            )
            if spec.process == "hierarchical":
                result = await self._run_managed(
                    execution_id, spec, task, context, feedback, context_refs
                )
            else:
                result = await self._execute(
                    execution_id, spec, task, context, feedback, previous, context_refs
                )
            attempts += result.attempt
            usage = usage + result.token_usage
            status.output_summary = result.raw[:SUMMARY_CHARS]
            status.token_usage = usage
            status.json_dict = result.json_dict
            if not task.human_input:
                break
            verdict = await self._ask_human(task, result.raw)
            if verdict.approve:
                break
            feedback, previous = verdict.feedback, result.raw
        status.state = TaskState.COMPLETED
        status.ended_at = workflow.now()
        outputs[task.name] = TaskOutput(
            name=task.name,
            agent=task.agent,
            raw=result.raw,
            attempts=attempts,
            token_usage=usage,
            ref=result.ref,
            size=result.size,
            json_dict=result.json_dict,
            output_format=result.output_format,
            output_file=result.output_file,
        )
        self._emit(
            EventType.TASK_COMPLETED,
            task=task.name,
            agent=task.agent,
            attempt=result.attempt,
            data={
                "output": result.raw[:SUMMARY_CHARS],
                "token_usage": usage.model_dump(),
                "llm_calls": result.llm_calls,
                "replayed_calls": result.replayed_calls,
            },
        )

    async def _execute(
        self,
        execution_id: str,
        spec: CrewSpec,
        task: TaskSpec,
        context: dict[str, str],
        feedback: str | None,
        previous: str | None,
        context_refs: dict[str, str] | None = None,
    ) -> RunTaskResult:
        run = self._runs.get(task.name, 0) + 1
        self._runs[task.name] = run
        agent = spec.agent(task.agent)
        # An agent that may delegate works with its coworkers: they travel with the task.
        agents = [a.name for a in spec.agents] if agent.allow_delegation else [task.agent]
        return await self._call(
            spec,
            task,
            RUN_TASK,
            RunTaskInput(
                execution_id=execution_id,
                spec=_slim(spec, task, agents),
                task=task.name,
                context=context,
                context_refs=context_refs or {},
                feedback=feedback,
                previous_output=previous,
                plan=(self._plans or {}).get(task.name),
                crew_id=self._status.crew_id,
                owner=self._owner,
            ),
            RunTaskResult,
            activity_id=task.name if run == 1 else f"{task.name}#{run}",
            summary=f"{_one_line(agent.role)}: {task.name}",
        )

    async def _run_managed(
        self,
        execution_id: str,
        spec: CrewSpec,
        task: TaskSpec,
        context: dict[str, str],
        feedback: str | None,
        context_refs: dict[str, str],
    ) -> RunTaskResult:
        """A hierarchical task: manager decisions and delegations, each its own activity."""
        run = self._runs.get(task.name, 0) + 1
        self._runs[task.name] = run
        prefix = task.name if run == 1 else f"{task.name}#{run}"
        history: list[DelegationRecord] = []
        correction = f"A human reviewed your last answer: {feedback}" if feedback else None
        usage = TokenUsage()
        calls = attempts = 0
        delegated: dict[tuple[str, str], int] = {}
        coworkers = [a.name for a in spec.agents]
        for step in range(spec.manager_max_steps):
            decision = await self._call(
                spec,
                task,
                MANAGER_STEP,
                ManagerStepInput(
                    execution_id=execution_id,
                    spec=_slim(spec, task, [a.name for a in spec.agents]),
                    task=task.name,
                    step=step,
                    context=context,
                    context_refs=context_refs,
                    history=history,
                    correction=correction,
                ),
                ManagerDecision,
                activity_id=f"{prefix}.manager.{step + 1}",
                summary=f"Manager: step {step + 1} of {task.name}",
            )
            usage = usage + decision.token_usage
            attempts = max(attempts, decision.attempt)
            calls += 1
            if decision.action == "final":
                return RunTaskResult(
                    raw=decision.answer or "", token_usage=usage, llm_calls=calls, attempt=attempts
                )
            if decision.action == "delegate" and decision.problem:
                raise TaskFailed(
                    task.name,
                    f"the manager delegated to {decision.problem.removeprefix('unknown coworker ')}"
                    f", who is not in the crew (coworkers: {', '.join(coworkers)})",
                    "unknown_coworker",
                )
            if decision.action == "invalid":
                correction = decision.problem
                continue
            correction = None
            assert decision.coworker is not None and decision.task is not None
            key = (decision.coworker, decision.task)
            delegated[key] = delegated.get(key, 0) + 1
            if delegated[key] > 2:
                raise TaskFailed(
                    task.name,
                    f"the manager loops: it delegated the same work to {decision.coworker} "
                    f"{delegated[key]} times",
                    "manager_loop",
                )
            coworker = spec.agent(decision.coworker)
            self._emit(
                EventType.DELEGATION,
                task=task.name,
                agent=coworker.name,
                data={"step": step + 1, "coworker": coworker.name, "work": decision.task},
            )
            description = decision.task
            if decision.context:
                description += f"\n\nContext from your manager:\n{decision.context}"
            done = await self._call(
                spec,
                task,
                RUN_TASK,
                RunTaskInput(
                    execution_id=execution_id,
                    spec=_slim(spec, task, [coworker.name, task.agent]),
                    task=task.name,
                    context=context,
                    context_refs=context_refs,
                    agent_override=coworker.name,
                    description_override=description,
                    expected_output_override="A complete, self-contained answer to this work.",
                    crew_id=self._status.crew_id,
                    owner=self._owner,
                ),
                RunTaskResult,
                activity_id=f"{prefix}.delegate.{step + 1}.{coworker.name}",
                summary=f"{_one_line(coworker.role)}: {_one_line(decision.task)[:80]}",
            )
            usage = usage + done.token_usage
            calls += done.llm_calls
            history.append(
                DelegationRecord(
                    coworker=coworker.name, task=decision.task, result=done.raw, ref=done.ref
                )
            )
        raise TaskFailed(
            task.name,
            f"the manager gave no final answer within {spec.manager_max_steps} steps",
            "manager_max_steps",
        )

    async def _call(
        self,
        spec: CrewSpec,
        task: TaskSpec,
        activity_name: str,
        arg: Any,
        result_type: type[Any],
        *,
        activity_id: str,
        summary: str,
    ) -> Any:
        """One activity for ``task``, with its retry policy and timeouts; failures end it."""
        retry = spec.retry_for(task)
        timeouts = spec.timeout_for(task).as_timedeltas()
        self._book.activity_started(activity_id)
        try:
            result = await workflow.execute_activity(
                activity_name,
                arg,
                result_type=result_type,
                activity_id=activity_id,
                summary=summary,
                retry_policy=RetryPolicy(
                    maximum_attempts=retry.maximum_attempts,
                    initial_interval=timedelta(seconds=retry.initial_interval),
                    backoff_coefficient=retry.backoff_coefficient,
                    maximum_interval=timedelta(seconds=retry.maximum_interval),
                    non_retryable_error_types=NON_RETRYABLE,
                ),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                start_to_close_timeout=timeouts["start_to_close_timeout"],
                heartbeat_timeout=timeouts["heartbeat_timeout"],
                schedule_to_close_timeout=timeouts["schedule_to_close_timeout"],
            )
        except ActivityError as exc:
            self._book.activity_ended(activity_id)
            if isinstance(exc.cause, CancelledError):
                raise exc.cause from None
            self._raise_if_cancel_requested()
            message, error_type = _describe_failure(exc)
            raise TaskFailed(task.name, message, error_type) from None
        except BaseException:
            # Cancelled, or evicted at worker shutdown (no workflow calls may run then).
            self._book.activity_ended(activity_id)
            raise
        # The attempt's last events ride on its result (no signal for them).
        self._book.accept(
            ActivityEventsInput(
                task=task.name,
                attempt=result.attempt,
                events=result.events,
                journal_key=activity_id,
            )
        )
        self._book.activity_ended(activity_id)
        self._raise_if_cancel_requested()
        return result

    @staticmethod
    def _raise_if_cancel_requested() -> None:
        """An activity that finished before it heard of a cancellation swallows it: the
        request is still there, so honour it before starting anything else."""
        if workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError()

    def _fail_task(self, exc: TaskFailed) -> None:
        status = self._book.task_failed(exc.task, workflow.now(), exc.message)
        self._emit(
            EventType.TASK_FAILED,
            task=exc.task,
            agent=status.agent,
            attempt=status.attempts,
            data={"error": exc.message, "error_type": exc.error_type},
        )

    async def _ask_human(self, task: TaskSpec, output: str) -> FeedbackInput:
        status = self._book.task(task.name)
        status.state = TaskState.WAITING_FOR_INPUT
        self._set_state(ExecutionState.WAITING_FOR_INPUT)
        self._emit(
            EventType.HUMAN_INPUT_REQUESTED,
            task=task.name,
            agent=task.agent,
            data={"output": output, "timeout_seconds": task.human_input_timeout},
        )
        self._waiting[task.name] = None
        self._waiting_info[task.name] = WaitingTask(
            task=task.name,
            agent=task.agent,
            output=output,
            since=workflow.now(),
            timeout_seconds=task.human_input_timeout,
        )
        try:
            await workflow.wait_condition(
                lambda: self._waiting.get(task.name) is not None,
                timeout=task.human_input_timeout,
            )
        except TimeoutError:
            # An answer that landed in the same activation as the timer wins over it.
            if self._waiting.get(task.name) is None:
                if task.human_input_timeout_outcome == "fail":
                    self._waiting.pop(task.name, None)
                    raise TaskFailed(
                        task.name,
                        f"no human feedback within {task.human_input_timeout:g}s",
                        "human_input_timeout",
                    ) from None
                self._waiting[task.name] = FeedbackInput(task=task.name, approve=True)
        # No ``finally``: when a worker shuts down it evicts waiting workflows by closing
        # their coroutines, and workflow calls made then fail (_NotInWorkflowEventLoopError).
        verdict = self._waiting.pop(task.name, None)
        self._waiting_info.pop(task.name, None)
        if not self._waiting:
            self._set_state(ExecutionState.RUNNING)
        assert verdict is not None
        return verdict

    async def _finish(
        self, state: ExecutionState, result: CrewWorkflowResult | None = None
    ) -> None:
        self._status.ended_at = workflow.now()
        self._set_state(state)
        await self._record(result)
        # Webhook deliveries run on as workflows of their own: wait until each has started.
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        # Let subscribers drain, then end: a poll left hanging would be lost with the run.
        self._stream.detach_pollers()
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _record(self, result: CrewWorkflowResult | None) -> None:
        """Persist the finished execution and its trace, so they outlive Temporal's retention.

        Retried for up to an hour (a database outage must not lose the record), yet never
        turns a finished crew into a failed one. A cancel that arrives now (the crew has
        already ended) does not stop the record either: it is issued again.
        """
        info = workflow.info()
        record = RecordExecutionInput(
            workflow_id=info.workflow_id,
            status=self._status,
            result=result,
            owner=self._owner,
        )
        # A local activity, given the trace: no activity task and workflow task of its own
        # on the server, and no trace query back into this workflow (3 fewer writes and a
        # query per execution). Histories from before record it as an activity.
        local = workflow.patched(LOCAL_RECORD_PATCH)
        if local:
            record.events = list(self._book.events)
        execute: Any = workflow.execute_local_activity if local else workflow.execute_activity
        for _ in range(2):
            try:
                await execute(
                    RECORD_EXECUTION,
                    record,
                    start_to_close_timeout=timedelta(seconds=60),
                    schedule_to_close_timeout=timedelta(hours=1),
                    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                    summary="record execution",
                )
                return
            except (asyncio.CancelledError, CancelledError):
                continue
            except ActivityError as exc:
                workflow.logger.warning("could not record execution: %s", exc)
                return

    # -- state ------------------------------------------------------------------------------

    def _set_state(self, state: ExecutionState) -> None:
        self._book.set_state(state)
        if workflow.info().typed_search_attributes.get(CREW_NAME_KEY) is not None:
            workflow.upsert_search_attributes([STATUS_KEY.value_set(state.value)])
        workflow.upsert_memo({"status": state.value})
        self._show_details()

    def _emit(
        self,
        kind: EventType,
        *,
        task: str | None = None,
        agent: str | None = None,
        attempt: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self._flush_resets()
        event = self._book.emit(
            kind, workflow.now(), task=task, agent=agent, attempt=attempt, data=data
        )
        number = self._own_events
        self._own_events += 1
        targets = [w.subscription_id for w in self._webhooks if event.type in w.events]
        if targets:
            self._deliveries.append(asyncio.create_task(self._deliver(event, number, targets)))
        self._show_details()

    def _show_details(self) -> None:
        """What the Web UI and ``temporal workflow describe`` show as current details."""
        workflow.set_current_details(webui.current_details(self._status, self._llm_calls))

    async def _deliver(self, event: Event, number: int, subscriptions: list[str]) -> None:
        """Hand an event to a delivery workflow of its own (retrying activities; it outlives
        this run). Its id is stable per event (the execution and the event's number among
        the workflow's own), so a replay or reset never delivers twice."""
        offset = event.offset if event.offset is not None else 0
        event_id = f"evt_{self._execution_id}_{number}"
        try:
            await workflow.start_child_workflow(
                WEBHOOK_WORKFLOW,
                WebhookDeliveryInput(
                    event_id=event_id,
                    event_type=str(event.type),
                    execution_id=self._execution_id,
                    subscriptions=subscriptions,
                    payload={
                        "type": str(event.type),
                        "timestamp": event.timestamp.isoformat(),
                        "data": {
                            "execution_id": self._execution_id,
                            "crew_name": self._status.crew_name,
                            "offset": offset,
                            "task": event.task,
                            "agent": event.agent,
                            **event.data,
                        },
                    },
                ),
                id=f"kasal-webhook-{event_id}",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"webhook {event.type}",
            )
        except Exception as exc:  # already started by an earlier run (a reset): delivered
            workflow.logger.info("webhook delivery %s not started: %s", event_id, exc)

    # -- handlers ---------------------------------------------------------------------------

    @workflow.signal(
        name=EVENTS_SIGNAL,
        description="Events of a running task attempt, signed by the worker that runs it "
        "(internal: batches from other attempts or without a valid signature are dropped).",
    )
    def on_activity_events(self, batch: ActivityEventsInput) -> None:
        """Events an activity sends while its task runs."""
        authentic = not self._signed_events or signing.verify(
            workflow.info().workflow_id, batch.signed_body(), batch.signature
        )
        reason = self._book.why_rejected(batch, authentic)
        if reason is not None:
            workflow.logger.warning(
                "dropped %d event(s) for %s: %s", len(batch.events), batch.task, reason
            )
            return
        self._flush_resets()
        for event in self._book.accept(batch):
            if event.type == EventType.LLM_CALL and event.task:
                self._llm_calls[event.task] = self._llm_calls.get(event.task, 0) + 1
        self._show_details()

    @workflow.signal(
        name=STOP_SIGNAL,
        description="Stop gracefully: the running task finishes, no new task starts, the "
        'execution ends "stopped". {"by": who, "reason": why}; a second stop changes nothing.',
    )
    def on_stop(self, data: StopInput) -> None:
        """A graceful stop."""
        if self._stop is not None or self._status.state.finished:
            return
        self._stop = data
        self._status.stop_requested_by = data.by
        self._status.stop_requested_at = workflow.now()
        self._emit(EventType.STOP_REQUESTED, data={"by": data.by, "reason": data.reason})

    @workflow.query(
        name=WAITING_QUERY,
        description="Tasks waiting for a person: output to review, since when, timeout.",
    )
    def waiting(self) -> list[WaitingTask]:
        """Tasks waiting for human input now."""
        return list(self._waiting_info.values())

    @workflow.query(
        name=STATUS_QUERY,
        description="The execution's state, every task's state, attempts, times, output "
        "summary and tokens. No argument.",
    )
    def status(self) -> ExecutionStatus:
        """The execution's state and every task's progress."""
        return self._status

    @workflow.query(
        name=TRACE_QUERY,
        description='Recorded events in order. Optional argument {"from_offset": 0, '
        '"limit": 1000}; with none, the first 1000.',
    )
    def trace(self, data: TraceQueryInput | None = None) -> list[Event]:
        """Events from an offset, in order."""
        data = data or TraceQueryInput()
        return self._book.events[data.from_offset : data.from_offset + data.limit]

    @workflow.query(
        name=OUTPUTS_QUERY,
        description="Outputs of the tasks finished so far, by task name (a large output is a "
        "preview with the id of its blob in `ref`). What a replay keeps. No argument.",
    )
    def outputs(self) -> dict[str, TaskOutput]:
        """Outputs of the finished tasks."""
        return self._outputs

    @workflow.update(
        name=FEEDBACK_UPDATE,
        description='A human\'s verdict on a task waiting for review: {"task": name or null, '
        '"approve": true} or {"approve": false, "feedback": "what to change"}.',
    )
    def feedback(self, data: FeedbackInput) -> FeedbackResult:
        """A human's verdict on a task waiting for review."""
        name = data.task or next(n for n, v in self._waiting.items() if v is None)
        self._waiting[name] = data
        return FeedbackResult(task=name, approved=data.approve, rerun=not data.approve)

    @feedback.validator
    def _validate_feedback(self, data: FeedbackInput) -> None:
        open_tasks = [n for n, v in self._waiting.items() if v is None]
        if not open_tasks:
            raise ValueError("no task is waiting for human input")
        if data.task is not None and data.task not in open_tasks:
            raise ValueError(
                f"task {data.task!r} is not waiting for input; waiting: {', '.join(open_tasks)}"
            )
        if not data.approve and not (data.feedback or "").strip():
            raise ValueError("give feedback, or approve")


#: Descriptions of the handlers ``WorkflowStream`` registers (it gives none).
_STREAM_HANDLERS = {
    "signals": {
        "__temporal_workflow_stream_publish": "Internal (workflow streams): events published "
        "to the execution's stream by an external publisher.",
    },
    "updates": {
        "__temporal_workflow_stream_poll": "Internal (workflow streams): long-poll the "
        "execution's event stream from an offset; the API's relay and `kasal run` use it.",
    },
    "queries": {
        "__temporal_workflow_stream_poll": "Internal (workflow streams): the events from an "
        "offset, without waiting.",
        "__temporal_workflow_stream_offset": "Internal (workflow streams): the stream's next "
        "offset.",
    },
}


def _describe_stream_handlers() -> None:
    """Give the stream's handlers descriptions, so every query, signal and update the Web
    UI lists says what it is. ``workflow.set_*_handler`` takes no description, so this sets
    them on the handler definitions the SDK keeps (skipped if a future SDK keeps them
    elsewhere: descriptions are documentation, never behaviour)."""
    import dataclasses

    instance = workflow._Runtime.current()  # noqa: SLF001 - see docstring
    for kind, descriptions in _STREAM_HANDLERS.items():
        handlers = getattr(instance, f"_{kind}", None)
        if not isinstance(handlers, dict):
            continue
        for name, description in descriptions.items():
            definition = handlers.get(name)
            if definition is not None and not getattr(definition, "description", None):
                try:
                    handlers[name] = dataclasses.replace(definition, description=description)
                except (TypeError, ValueError):
                    continue


def _event_from_wire(wire: str) -> Event:
    """An event from the stream state's wire form: base64 of a serialized ``Payload``."""
    payload = Payload()
    payload.ParseFromString(base64.b64decode(wire))
    return workflow.payload_converter().from_payload(payload, Event)


def _one_line(text: str) -> str:
    """Text as one line: roles written with YAML's ``>`` end in a newline, and an activity
    summary is a single line in the Web UI."""
    return " ".join(text.split())


def _slim(spec: CrewSpec, task: TaskSpec, agents: list[str]) -> CrewSpec:
    """The spec an activity needs: one task and its agents, not the whole crew.

    Every activity input is stored in history; a 300-task crew would otherwise store its
    whole spec 300 times.
    """
    return spec.model_copy(
        update={
            "tasks": [task.model_copy(update={"context": None})],
            "agents": [a for a in spec.agents if a.name in agents],
        }
    )


def _describe_failure(exc: ActivityError) -> tuple[str, str | None]:
    cause: BaseException | None = exc.cause
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause.message, cause.type
        if cause.__cause__ is None:
            break
        cause = cause.__cause__
    if cause is not None and getattr(cause, "message", None):
        kind = type(cause).__name__
        return f"{kind}: {cause.message}", kind  # type: ignore[attr-defined]
    return str(exc), None
