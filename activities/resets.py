"""Resets from the Temporal CLI or Web UI, made visible in the trace.

A reset starts a new run of the same workflow from a point of its history: everything before
that point is kept (replayed, not run again), everything the earlier run did after it is
superseded. The workflow marks the point with an ``execution_reset`` event (it learns of the
reset deterministically, from its history). Only the history says which run was reset, why,
and at which event, and only the earlier run knows what it did afterwards: the record
activity adds both to each marker before the trace is stored, so nothing is overwritten
silently (the superseded events, and the record the new run replaces, stay in the trace).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import WorkflowTaskFailedCause

from kasal.db.models import Execution
from kasal.execution import Event, EventType

log = logging.getLogger(__name__)

#: How many superseded events a marker lists in full (the count is always exact).
MAX_SUPERSEDED = 1000
#: How much of a superseded event's data is kept per value.
DATA_CHARS = 300


@dataclass(frozen=True)
class ResetPoint:
    """A reset as the new run's history records it (a WorkflowTaskFailed, cause reset)."""

    event_id: int
    base_run_id: str
    new_run_id: str
    reason: str
    identity: str


async def reset_points(workflow_id: str, run_id: str) -> list[ResetPoint]:
    """Every reset recorded in the history of run ``run_id``, oldest first."""
    handle = activity.client().get_workflow_handle(workflow_id, run_id=run_id)
    points: list[ResetPoint] = []
    async for event in handle.fetch_history_events():
        if not event.HasField("workflow_task_failed_event_attributes"):
            continue
        attrs = event.workflow_task_failed_event_attributes
        if attrs.cause != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW:
            continue
        points.append(
            ResetPoint(
                event_id=event.event_id,
                base_run_id=attrs.base_run_id,
                new_run_id=attrs.new_run_id,
                reason=attrs.failure.message,
                identity=attrs.identity,
            )
        )
    return points


def compact(event: Event) -> dict[str, Any]:
    """A superseded event as the marker lists it: what happened, shortened."""
    data = {
        key: (value[:DATA_CHARS] if isinstance(value, str) else value)
        for key, value in event.data.items()
    }
    return {
        "offset": event.offset,
        "type": str(event.type),
        "task": event.task,
        "agent": event.agent,
        "attempt": event.attempt,
        "event_id": event.event_id,
        "timestamp": event.timestamp.isoformat(),
        "history_event_id": event.history_event_id,
        "data": data,
    }


def superseded_by(marker: Event, base_trace: list[Event]) -> list[Event]:
    """The earlier run's events the new run replaced: those at the marker's offset and after
    (before it, both runs share one history, so their events are the same)."""
    start = marker.offset or 0
    return [e for e in base_trace if (e.offset or 0) >= start]


def replaced_record(row: Execution | None, resets: int) -> dict[str, Any] | None:
    """What the database held before this run's record, if an earlier run wrote it (a retry
    of this run's own record finds its own write, with as many resets: nothing replaced)."""
    if row is None or row.status_detail is None:
        return None
    if int(row.status_detail.get("resets", 0)) >= resets:
        return None
    output = (row.result or {}).get("output")
    return {
        "status": row.status,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "error": row.error,
        "output": output[:DATA_CHARS] if isinstance(output, str) else None,
        "event_count": row.event_count,
        "token_usage": row.token_usage,
    }


async def mark_resets(
    workflow_id: str,
    events: list[Event],
    read_trace: Any,
) -> list[Event]:
    """Complete every ``execution_reset`` marker of ``events`` that is not complete yet:
    the run that was reset, the reset's event id and reason, and the events it superseded.

    ``read_trace(workflow_id, run_id)`` reads a run's trace (a query: closed runs answer
    too while Temporal retains them). What cannot be read is said, not guessed.
    """
    markers = [e for e in events if e.type == EventType.EXECUTION_RESET]
    pending = [m for m in markers if "base_run_id" not in m.data]
    if not pending:
        return events
    by_run: dict[str, list[Event]] = {}
    for marker in pending:
        by_run.setdefault(str(marker.data.get("run_id", "")), []).append(marker)
    for run_id, run_markers in by_run.items():
        try:
            points = await reset_points(workflow_id, run_id)
        except Exception as exc:
            log.warning("could not read the history of %s run %s: %s", workflow_id, run_id, exc)
            points = []
        # Markers of one run and the resets in its history come in the same order.
        for marker, point in zip(run_markers, points[-len(run_markers) :], strict=False):
            marker.data.update(
                base_run_id=point.base_run_id,
                reset_event_id=point.event_id,
                reason=point.reason,
                reset_by=point.identity,
            )
            try:
                base = await read_trace(workflow_id, point.base_run_id)
            except Exception as exc:
                marker.data["superseded_unavailable"] = (
                    f"the reset run's trace could not be read: {type(exc).__name__}"
                )
                continue
            gone = superseded_by(marker, base)
            marker.data["superseded_count"] = len(gone)
            marker.data["superseded"] = [compact(e) for e in gone[:MAX_SUPERSEDED]]
        for marker in run_markers:
            marker.data.setdefault("base_run_id", None)
    return events
