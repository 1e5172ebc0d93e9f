"""Re-running an execution from one of its tasks, keeping the outputs of the tasks before.

CrewAI's ``crewai replay -t <task>`` re-runs a crew from a task with the earlier outputs
kept. Kasal does it with a NEW execution, linked to the original, whose workflow input
carries those outputs (:class:`~kasal.execution.ReplaySeed`): its workflow marks the earlier
tasks reused and runs no activity for them (no LLM call, no tool call), then runs the task
named and every task after it. The original's history is never touched, and the new
history says plainly which outputs were kept and where they came from.

Where the original's outputs come from, most exact first: the result of a completed
execution; the workflow's ``outputs`` query (running executions, or closed ones a worker
can still answer for); the activity results in its history (no worker needed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from pydantic import BaseModel, Field
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus

from kasal.constants import OUTPUTS_QUERY, workflow_id_for
from kasal.exceptions import ConflictError, InvalidSpecError, NotFoundError
from kasal.execution import (
    CrewWorkflowInput,
    CrewWorkflowResult,
    ReplaySeed,
    TaskOutput,
    TokenUsage,
)
from kasal.spec import CrewSpec

log = logging.getLogger(__name__)

#: Activity type names (``activities.models`` owns them; ``kasal`` may not import it).
_RUN_TASK, _MANAGER_STEP = "run_task", "manager_step"
#: Seconds the ``outputs`` query may take (a closed workflow needs a worker to answer).
QUERY_TIMEOUT = 5.0


class ReplaySource(BaseModel):
    """What a replay needs from the original execution."""

    execution_id: str
    spec: CrewSpec
    inputs: dict[str, Any] = Field(default_factory=dict)
    crew_id: str | None = None
    owner: str | None = None
    #: Outputs of the tasks that finished, by name.
    outputs: dict[str, TaskOutput] = Field(default_factory=dict)


def task_of_activity(activity_id: str) -> str:
    """The task an activity belongs to: ids are ``<task>``, ``<task>#<run>``,
    ``<task>.manager.<n>`` and ``<task>.delegate.<n>.<coworker>``."""
    name = activity_id.split("#", 1)[0]
    for marker in (".manager.", ".delegate."):
        if marker in name:
            name = name.split(marker, 1)[0]
    return name


def plan_replay(
    source: ReplaySource, from_task: str, inputs: dict[str, Any] | None = None
) -> tuple[CrewSpec, dict[str, Any], ReplaySeed]:
    """The spec, inputs and seed of a replay of ``source`` from ``from_task``.

    ``inputs`` override the original's (the earlier tasks keep the outputs they produced
    with the old values, as CrewAI's replay does). Every task before ``from_task`` must
    have finished in the original.
    """
    names = [t.name for t in source.spec.tasks]
    if from_task not in names:
        raise InvalidSpecError(
            f"execution {source.execution_id} has no task {from_task!r} "
            f"(tasks: {', '.join(names)})",
            field="from_task",
        )
    merged = {**source.inputs, **(inputs or {})}
    source.spec.interpolated(merged)  # a missing input is an error before anything starts
    kept: dict[str, TaskOutput] = {}
    for name in names[: names.index(from_task)]:
        output = source.outputs.get(name)
        if output is None:
            raise ConflictError(
                f"task {name!r} did not finish in execution {source.execution_id}: replay "
                f"from {name!r} or an earlier task",
                details={"unfinished_task": name},
            )
        kept[name] = output
    seed = ReplaySeed(from_execution=source.execution_id, from_task=from_task, outputs=kept)
    return source.spec, merged, seed


async def source_from_temporal(client: Client, execution_id: str) -> ReplaySource:
    """The original's spec, inputs and finished outputs, read from Temporal."""
    handle = client.get_workflow_handle(workflow_id_for(execution_id))
    try:
        description = await handle.describe()
    except Exception as exc:
        raise NotFoundError(
            f"execution {execution_id} is not known to Temporal (retention over?): {exc}"
        ) from exc
    started: CrewWorkflowInput | None = None
    completed: CrewWorkflowResult | None = None
    history = []
    async for event in handle.fetch_history_events():
        history.append(event)
        if event.HasField("workflow_execution_started_event_attributes"):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            started = (await client.data_converter.decode(payloads, [CrewWorkflowInput]))[0]
        elif event.HasField("workflow_execution_completed_event_attributes"):
            payloads = event.workflow_execution_completed_event_attributes.result.payloads
            completed = (await client.data_converter.decode(payloads, [CrewWorkflowResult]))[0]
    if started is None:
        raise NotFoundError(f"execution {execution_id} has no readable start event")
    outputs: dict[str, TaskOutput] | None
    if completed is not None:
        outputs = {t.name: t for t in completed.tasks}
    else:
        outputs = await _queried_outputs(handle, description.status)
    if outputs is None:
        outputs = outputs_from_history(started, history)
    return ReplaySource(
        execution_id=execution_id,
        spec=started.spec,
        inputs=started.inputs,
        crew_id=started.crew_id,
        owner=started.owner,
        outputs=outputs,
    )


async def _queried_outputs(
    handle: Any, status: WorkflowExecutionStatus | None
) -> dict[str, TaskOutput] | None:
    try:
        return await asyncio.wait_for(
            handle.query(OUTPUTS_QUERY, result_type=dict[str, TaskOutput]), QUERY_TIMEOUT
        )
    except Exception as exc:  # no worker for a closed run, an older workflow without it
        log.info("outputs query unanswered (%s, %s): reading the history", status, exc)
        return None


def _json(payload: Payload) -> Any:
    return json.loads(payload.data) if payload.data else None


def outputs_from_history(started: CrewWorkflowInput, history: list[Any]) -> dict[str, TaskOutput]:
    """Finished tasks' outputs from the activity results in a history (no worker needed).

    Outputs carried over a continue-as-new come from the run's input. A task with human
    review is left out: only the workflow knows whether its last output was approved.
    """
    outputs = dict(started.resume.outputs) if started.resume else {}
    tasks = {t.name: t for t in started.spec.tasks}
    scheduled: dict[int, tuple[str, str]] = {}
    attempts: dict[str, int] = {}
    for event in history:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attrs.activity_id, attrs.activity_type.name)
        elif event.HasField("activity_task_completed_event_attributes"):
            attrs = event.activity_task_completed_event_attributes
            activity_id, kind = scheduled.get(attrs.scheduled_event_id, ("", ""))
            name = task_of_activity(activity_id)
            task = tasks.get(name)
            if task is None or task.human_input or not attrs.result.payloads:
                continue
            value = _json(attrs.result.payloads[0]) or {}
            attempts[name] = attempts.get(name, 0) + int(value.get("attempt", 1))
            if kind == _RUN_TASK and activity_id.split("#", 1)[0] == name:
                raw, ref, size = value.get("raw", ""), value.get("ref"), value.get("size")
            elif kind == _MANAGER_STEP and value.get("action") == "final":
                raw, ref, size = value.get("answer") or "", None, None
            else:
                continue
            outputs[name] = TaskOutput(
                name=name,
                agent=task.agent,
                raw=raw,
                attempts=attempts[name],
                token_usage=TokenUsage.model_validate(value.get("token_usage") or {}),
                ref=ref,
                size=size,
            )
    return outputs


async def start_replay(
    client: Client,
    source: ReplaySource,
    from_task: str,
    inputs: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    """Start the replay of ``source`` from ``from_task`` as a new execution; returns its
    :class:`~kasal.client.ExecutionHandle`. ``options`` go to
    :func:`kasal.client.start_execution` (``task_queue`` is required)."""
    from kasal.client import start_execution

    spec, merged, seed = plan_replay(source, from_task, inputs)
    options.setdefault("crew_id", source.crew_id)
    options.setdefault("owner", source.owner)
    return await start_execution(client, spec, merged, seed=seed, **options)
