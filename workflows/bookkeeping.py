"""The execution's bookkeeping: status, the ordered event log, and which reports to trust.

Pure and deterministic (no Temporal calls, no clock: the workflow passes ``now``), so it is
tested without a server. ``CrewWorkflow`` owns one and publishes every event it appends.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kasal.execution import (
    ActivityEventsInput,
    Event,
    EventType,
    ExecutionState,
    ExecutionStatus,
    TaskState,
    TaskStatus,
    TokenUsage,
)

#: Task states after which no report of an attempt changes the task any more.
_ENDED = (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


class ExecutionBook:
    """Status and events of one execution, and the running activities' attempts."""

    def __init__(
        self,
        status: ExecutionStatus,
        events: list[Event] | None = None,
        publish: Callable[[Event], None] | None = None,
        history_position: Callable[[], int | None] | None = None,
    ) -> None:
        self.status = status
        #: Where the workflow is in its Temporal history now (stamped on each new event).
        self._history_position = history_position or (lambda: None)
        self.events: list[Event] = list(events or [])
        self._seen = {e.event_id for e in self.events}
        self._publish = publish or (lambda _event: None)
        #: Activity ids the workflow waits for now: only their reports count.
        self.inflight: set[str] = set()
        #: The newest attempt heard from per running activity: older ones are stale.
        self.attempts: dict[str, int] = {}

    # -- status ----------------------------------------------------------------------------

    def task(self, name: str) -> TaskStatus:
        """The status entry of task ``name``."""
        return next(t for t in self.status.tasks if t.name == name)

    def set_state(self, state: ExecutionState) -> None:
        """The execution's state."""
        self.status.state = state

    def task_running(self, name: str, now: datetime) -> TaskStatus:
        """Task ``name`` (re)starts."""
        status = self.task(name)
        status.state = TaskState.RUNNING
        status.started_at = status.started_at or now
        status.attempts = max(status.attempts, 1)
        return status

    def task_failed(self, name: str, now: datetime, message: str) -> TaskStatus:
        """Task ``name`` failed for good."""
        status = self.task(name)
        status.state = TaskState.FAILED
        status.ended_at = now
        status.error = message
        return status

    def cancel_unfinished(self, now: datetime) -> None:
        """Every task that did not finish is cancelled (the execution is over)."""
        for status in self.status.tasks:
            if status.state not in (TaskState.COMPLETED, TaskState.FAILED):
                if status.state != TaskState.PENDING:
                    status.ended_at = now
                status.state = TaskState.CANCELLED

    # -- events ----------------------------------------------------------------------------

    def emit(
        self,
        kind: EventType,
        now: datetime,
        *,
        task: str | None = None,
        agent: str | None = None,
        attempt: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """An event of the workflow's own, appended to the log."""
        event = Event(
            type=kind,
            timestamp=now,
            task=task,
            agent=agent,
            attempt=attempt,
            data=data or {},
            event_id=f"wf-{len(self.events)}",
        )
        self._append(event)
        return event

    def _append(self, event: Event) -> None:
        event.offset = len(self.events)
        if event.history_event_id is None:
            event.history_event_id = self._history_position()
        self.events.append(event)
        self._seen.add(event.event_id)
        self.status.event_count = len(self.events)
        self._publish(event)

    # -- reports from running activities ---------------------------------------------------

    def activity_started(self, activity_id: str) -> None:
        """The workflow now waits for ``activity_id``."""
        self.inflight.add(activity_id)

    def activity_ended(self, activity_id: str) -> None:
        """The workflow no longer waits for ``activity_id``: its late reports are dropped."""
        self.inflight.discard(activity_id)
        self.attempts.pop(activity_id, None)

    def why_rejected(self, batch: ActivityEventsInput, authentic: bool) -> str | None:
        """Why a batch of reports is not trusted, or None if it is."""
        if not authentic:
            return "unsigned or wrongly signed"
        key = batch.journal_key or batch.task
        if key not in self.inflight or self.status.state.finished:
            # From an attempt the workflow no longer waits for (it ended, failed or was
            # cancelled): its events would land after the task's end.
            return "from an activity that is not running"
        if batch.attempt < self.attempts.get(key, 0):
            return f"from attempt {batch.attempt}, superseded by {self.attempts[key]}"
        return None

    def accept(self, batch: ActivityEventsInput) -> list[Event]:
        """Apply a trusted batch: its new events, in order, and what they say of the task."""
        key = batch.journal_key or batch.task
        self.attempts[key] = max(self.attempts.get(key, 0), batch.attempt)
        status = next((t for t in self.status.tasks if t.name == batch.task), None)
        accepted: list[Event] = []
        for event in batch.events:
            if event.event_id in self._seen:
                continue  # a re-sent batch
            if status is not None and status.state not in _ENDED:
                if event.type == EventType.TASK_STARTED and event.attempt:
                    status.attempts = max(status.attempts, event.attempt)
                    status.state = TaskState.RUNNING
                elif event.type == EventType.TASK_RETRYING:
                    status.state = TaskState.RETRYING
                    status.attempts = max(status.attempts, int(event.data.get("next_attempt", 0)))
            if event.type == EventType.LLM_CALL and not event.data.get("replayed"):
                prompt = int(event.data.get("prompt_tokens", 0))
                completion = int(event.data.get("completion_tokens", 0))
                self.status.token_usage = self.status.token_usage + TokenUsage(
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=prompt + completion,
                    requests=1,
                )
            self._append(event)
            accepted.append(event)
        return accepted
