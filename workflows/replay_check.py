"""Replay a recorded history against the current workflow code, on a laptop.

``kasal history export EXECUTION > h.json`` writes a history in Temporal's JSON format (the
one the Web UI downloads and ``temporal workflow show --output json`` prints);
``kasal replay-history h.json`` runs Temporal's ``Replayer`` over it with this checkout's
``CrewWorkflow``, the worker's sandbox and the Pydantic data converter, exactly as a worker
would replay it. A non-deterministic change is named by the first history event the code
no longer matches, the command involved, and the crew task it belongs to (activity ids are
``<task>``, ``<task>#<run>``, ``<task>.manager.<n>``, ``<task>.delegate.<n>.<coworker>``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from kasal.constants import WORKFLOW_ID_PREFIX
from kasal.replay import task_of_activity

_EVENT_ID = re.compile(r"HistoryEvent\(id: (\d+)")
_SCHEDULED_ACTIVITY = re.compile(r"scheduled event '([^']+)'")
_COMMAND_ACTIVITY = re.compile(r"activity command '([^']+)'|command .*?activity_id: \"([^\"]+)\"")
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


@dataclass
class ReplayVerdict:
    """The outcome of replaying one history with the current code."""

    compatible: bool
    workflow_id: str
    events: int
    #: The first history event the code no longer matches, its type, the activity it
    #: concerns (if any) and the crew task that activity belongs to.
    event_id: int | None = None
    event_type: str | None = None
    activity_id: str | None = None
    task: str | None = None
    #: The command the current code issued instead, when the error names it.
    command: str | None = None
    message: str = ""

    def describe(self) -> str:
        """One paragraph for people."""
        if self.compatible:
            return (
                f"compatible: {self.workflow_id} ({self.events} events) replays on the "
                "current workflow code"
            )
        where = []
        if self.event_id is not None:
            where.append(f"history event {self.event_id} ({self.event_type})")
        if self.activity_id:
            where.append(f"activity {self.activity_id!r}")
        if self.command:
            where.append(f"the code now issues a command for {self.command!r} instead")
        task = f"; task {self.task!r}" if self.task else ""
        head = (
            "NOT compatible: first diverging command: " + ", ".join(where)
            if where
            else ("NOT compatible")
        )
        return f"{head}{task}\n  {self.message}"


def load_history(path: Path, workflow_id: str | None = None) -> WorkflowHistory:
    """A history file in Temporal's JSON format."""
    stem = path.name.removesuffix(".json")
    default = stem if stem.startswith(WORKFLOW_ID_PREFIX) else f"{WORKFLOW_ID_PREFIX}{stem}"
    return WorkflowHistory.from_json(workflow_id or default, path.read_text())


def _event_type(event: HistoryEvent) -> str:
    from temporalio.api.enums.v1 import EventType

    name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    return "".join(part.title() for part in name.split("_"))


def _activity_id(event: HistoryEvent, scheduled: dict[int, str]) -> str | None:
    """The activity an event concerns, if any."""
    for field in (
        "activity_task_scheduled_event_attributes",
        "activity_task_started_event_attributes",
        "activity_task_completed_event_attributes",
        "activity_task_failed_event_attributes",
        "activity_task_timed_out_event_attributes",
        "activity_task_cancel_requested_event_attributes",
        "activity_task_canceled_event_attributes",
    ):
        if event.HasField(field):  # type: ignore[arg-type]
            attrs: Any = getattr(event, field)
            if field == "activity_task_scheduled_event_attributes":
                return str(attrs.activity_id)
            return scheduled.get(int(attrs.scheduled_event_id))
    return None


def locate(history: WorkflowHistory, message: str) -> dict[str, Any]:
    """What a nondeterminism message points at: the event, its activity, the task."""
    found: dict[str, Any] = {}
    command = _COMMAND_ACTIVITY.search(message)
    if command:
        found["command"] = command.group(1) or command.group(2)
    match = _EVENT_ID.search(message)
    recorded = _SCHEDULED_ACTIVITY.search(message)
    event_id: int | None = int(match.group(1)) if match else None
    if event_id is None and recorded:
        # "Activity id of scheduled event 'x' does not match ... command 'y'": the history's
        # first scheduling of 'x' is where the code went another way.
        event_id = next(
            (
                e.event_id
                for e in history.events
                if e.HasField("activity_task_scheduled_event_attributes")
                and e.activity_task_scheduled_event_attributes.activity_id == recorded.group(1)
            ),
            None,
        )
    if event_id is None:
        if found.get("command"):
            found["task"] = task_of_activity(found["command"])
        return found
    scheduled: dict[int, str] = {}
    next_activity: str | None = None
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_id
        if event.event_id == event_id:
            found["event_id"] = event_id
            found["event_type"] = _event_type(event)
            found["activity_id"] = _activity_id(event, scheduled)
        elif (
            event.event_id > event_id
            and "event_id" in found
            and next_activity is None
            and event.HasField("activity_task_scheduled_event_attributes")
        ):
            next_activity = event.activity_task_scheduled_event_attributes.activity_id
    activity_id = found.get("activity_id") or found.get("command") or next_activity
    if activity_id:
        found["task"] = task_of_activity(activity_id)
    return found


_quiet_runtime: Any = None


def replayer(workflows: Sequence[type] | None = None, *, quiet: bool = False) -> Replayer:
    """A replayer configured as Kasal's workers are (sandbox passthrough, converter).

    ``quiet``: the SDK core does not log the failing workflow task (the verdict says it).
    """
    from temporalio.runtime import Runtime, TelemetryConfig

    from workflows.crew_workflow import CrewWorkflow
    from workflows.worker import workflow_runner

    global _quiet_runtime
    if quiet and _quiet_runtime is None:
        _quiet_runtime = Runtime(telemetry=TelemetryConfig(logging=None, metrics=None))
    return Replayer(
        workflows=list(workflows or [CrewWorkflow]),
        workflow_runner=workflow_runner(),
        data_converter=pydantic_data_converter,
        runtime=_quiet_runtime if quiet else None,
    )


async def replay_history(
    history: WorkflowHistory, workflows: Sequence[type] | None = None, *, quiet: bool = False
) -> ReplayVerdict:
    """Replay ``history`` with the current code (or ``workflows``) and say what diverged."""
    result = await replayer(workflows, quiet=quiet).replay_workflow(
        history, raise_on_replay_failure=False
    )
    failure = result.replay_failure
    verdict = ReplayVerdict(
        compatible=failure is None, workflow_id=history.workflow_id, events=len(history.events)
    )
    if failure is None:
        return verdict
    text = str(failure)
    core = _CORE_MESSAGE.search(text)
    verdict.message = (core.group(1) if core else text).replace('\\"', '"')
    if isinstance(failure, NondeterminismError):
        for key, value in locate(history, text).items():
            setattr(verdict, key, value)
    return verdict
