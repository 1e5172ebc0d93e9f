"""Request and response bodies of operations: schedules, webhooks, the human-input inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas import ExecutionSummary, StrictInput
from kasal.schedules import Timetable

# -- schedules --------------------------------------------------------------------------------


class ScheduleCreate(StrictInput):
    """A crew on a timetable: a stored crew (``crew_id``: each run uses its spec as it is
    then) or an inline ``spec``, the ``inputs`` of every run, and when."""

    model_config = ConfigDict(extra="forbid", strict=False)

    name: str | None = Field(default=None, max_length=200)
    crew_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    spec: dict[str, Any] | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    timetable: Timetable

    @model_validator(mode="after")
    def _one_source(self) -> ScheduleCreate:
        if (self.crew_id is None) == (self.spec is None):
            raise ValueError("give exactly one of crew_id and spec")
        return self


class ScheduleUpdateIn(StrictInput):
    """Change a schedule: its timetable, the inputs of its runs, its name (each optional)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    name: str | None = Field(default=None, max_length=200)
    inputs: dict[str, Any] | None = None
    timetable: Timetable | None = None


class BackfillIn(StrictInput):
    """Run now what the timetable would have run between ``start_at`` and ``end_at``."""

    model_config = ConfigDict(extra="forbid", strict=False)

    start_at: datetime
    end_at: datetime


class ScheduleOut(BaseModel):
    """A schedule: what it runs, when (from Temporal), next and recent runs."""

    id: str
    name: str
    crew_id: str | None
    inputs: dict[str, Any]
    created_at: datetime
    temporal_id: str
    timetable: Timetable | None = None
    paused: bool | None = None
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[dict[str, Any]] = Field(default_factory=list)
    total_runs: int | None = None
    #: The newest executions this schedule started (ordinary executions).
    recent_executions: list[ExecutionSummary] = Field(default_factory=list)


class ScheduleAction(BaseModel):
    """What a pause, unpause, trigger or backfill did."""

    id: str
    action: str
    paused: bool | None = None


# -- webhooks ---------------------------------------------------------------------------------


class WebhookCreate(StrictInput):
    """Where to POST which events: of all the caller's executions, or of one crew's or one
    schedule's."""

    url: str = Field(min_length=8, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=20)
    crew_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    schedule_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    description: str = Field(default="", max_length=500)


class WebhookOut(BaseModel):
    """A subscription (its secret is shown once, when it is made)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[str]
    crew_id: str | None
    schedule_id: str | None
    description: str
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    """A new subscription, with its signing secret: store it now, it is not shown again."""

    secret: str


class DeliveryOut(BaseModel):
    """One delivery attempt."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    event_id: str
    event_type: str
    execution_id: str | None
    attempt: int
    status_code: int | None
    error: str | None
    succeeded: bool
    created_at: datetime


class RedeliveryOut(BaseModel):
    """A redelivery started: the same event id and body, delivered again."""

    delivery_id: str
    event_id: str
    workflow_id: str


# -- inbox ------------------------------------------------------------------------------------


class InboxItem(BaseModel):
    """A task waiting for a person: answer it at ``POST /api/v1/inbox/{id}``."""

    id: str
    execution_id: str
    crew_name: str
    task: str
    agent: str
    output: str
    since: datetime
    timeout_seconds: float | None
    expires_at: datetime | None


class InboxAnswer(StrictInput):
    """Approve the output, or give feedback to redo the task with it."""

    approve: bool = False
    feedback: str | None = Field(default=None, max_length=20_000)

    @model_validator(mode="after")
    def _approve_or_feedback(self) -> InboxAnswer:
        if self.approve and self.feedback:
            raise ValueError("give either approve=true or feedback, not both")
        if not self.approve and not (self.feedback or "").strip():
            raise ValueError('give {"approve": true} or {"feedback": "..."}')
        return self
