"""Request and response bodies. Requests refuse unknown fields and coerce no types."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kasal.execution import Event, EventType, TaskOutput, TaskStatus, TokenUsage

T = TypeVar("T")


class StrictInput(BaseModel):
    """Base of request bodies: unknown fields and wrong types are a 422, not a guess."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    """The one error shape of every 4xx and 5xx response."""

    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int
    offset: int
    limit: int


# -- auth -------------------------------------------------------------------------------------


class LoginInput(StrictInput):
    """Credentials: the email as username, and the password."""

    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    """An access token to send as ``Authorization: Bearer <token>``."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    #: Exchange at ``POST /api/v1/auth/refresh`` for a new pair before the access token
    #: expires (each is good once); absent where no sign-in is kept.
    refresh_token: str | None = None


class UserCreate(StrictInput):
    """A new user (admins only)."""

    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=8, max_length=1024)
    full_name: str | None = Field(default=None, max_length=200)
    is_admin: bool = False


class UserOut(BaseModel):
    """A user, without anything secret."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    full_name: str | None
    is_admin: bool
    is_active: bool
    created_at: datetime


# -- crews ------------------------------------------------------------------------------------


class CrewOut(BaseModel):
    """A stored crew and its spec."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    spec: dict[str, Any]
    #: The group that shares it.
    group_id: str | None = None
    created_at: datetime
    updated_at: datetime


# -- executions -------------------------------------------------------------------------------


class ExecutionCreate(StrictInput):
    """Start a stored crew (``crew_id``) or an inline ``spec``, with ``inputs``."""

    # The documented schema says what the validator below enforces: exactly one source.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "title": "a stored crew",
                    "required": ["crew_id"],
                    "properties": {"crew_id": {"type": "string"}, "spec": {"type": "null"}},
                },
                {
                    "title": "an inline spec",
                    "required": ["spec"],
                    "properties": {"spec": {"type": "object"}, "crew_id": {"type": "null"}},
                },
                {
                    "title": "a CrewAI project served by the workers",
                    "required": ["project"],
                    "properties": {
                        "project": {"type": "string"},
                        "spec": {"type": "null"},
                        "crew_id": {"type": "null"},
                    },
                },
            ]
        }
    )

    crew_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    spec: dict[str, Any] | None = None
    #: A CrewAI project the workers serve (``GET /api/v1/projects``), by name.
    project: str | None = Field(default=None, max_length=200)
    inputs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> ExecutionCreate:
        given = [x for x in (self.crew_id, self.spec, self.project) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of crew_id, spec and project")
        return self


class ExecutionStarted(BaseModel):
    """An accepted start: where to follow it."""

    execution_id: str
    workflow_id: str
    status: str
    crew_id: str | None
    created_at: datetime
    #: For a replay: the execution whose outputs it keeps, and the task it re-runs from.
    replay_of: str | None = None
    replay_from_task: str | None = None


class ExecutionSummary(BaseModel):
    """An execution in a list."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    workflow_id: str
    crew_id: str | None
    crew_name: str
    status: str
    #: The group that shares it.
    group_id: str | None = None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    #: A replay's original execution and the task it re-ran from (null otherwise).
    replay_of: str | None = None
    replay_from_task: str | None = None
    schedule_id: str | None = None
    stop_requested_by: str | None = None
    stop_requested_at: datetime | None = None
    stop_mode: str | None = None


class ExecutionOut(ExecutionSummary):
    """An execution's state with per-task progress; ``json`` is the structured output of
    the last task that has one (each task's is in ``tasks[].json_dict``)."""

    inputs: dict[str, Any]
    token_usage: TokenUsage
    tasks: list[TaskStatus]
    event_count: int
    json_output: dict[str, Any] | None = Field(default=None, alias="json")

    @model_validator(mode="after")
    def _latest_json(self) -> ExecutionOut:
        if self.json_output is None:
            done = [t.json_dict for t in self.tasks if t.json_dict is not None]
            self.json_output = done[-1] if done else None
        return self


class ExecutionResultOut(BaseModel):
    """The final output of a finished execution (``output`` is null unless it completed);
    ``json`` is the last task's structured output (``output_json``/``output_pydantic``)."""

    model_config = ConfigDict(populate_by_name=True)

    execution_id: str
    status: str
    output: str | None
    json_output: dict[str, Any] | None = Field(default=None, alias="json")
    tasks: list[TaskOutput]
    token_usage: TokenUsage
    error: str | None


class ProjectOut(BaseModel):
    """A CrewAI project the workers serve: start it with ``{"project": name}``."""

    name: str
    crew_name: str
    task_queue: str
    agents: list[str]
    tasks: list[str]
    placeholders: list[str]
    default_inputs: dict[str, Any]
    planning: bool
    process: str
    published_at: datetime


class CancelOut(BaseModel):
    """A cancel request: ``status`` is the execution's state as far as known."""

    execution_id: str
    status: str
    cancel_requested: bool


class ReplayIn(StrictInput):
    """Re-run an execution from a task as a new execution: earlier tasks keep their outputs
    (no LLM or tool call), ``from_task`` and every later task run again with ``inputs``
    overriding the original's."""

    from_task: str = Field(min_length=1, max_length=100)
    inputs: dict[str, Any] = Field(default_factory=dict)


class StopIn(StrictInput):
    """Why the execution is being stopped (optional)."""

    reason: str | None = Field(default=None, max_length=1000)


class StopOut(BaseModel):
    """A stop or force-stop: who asked and when, and the state as far as known.

    ``status`` is ``stopping`` while a graceful stop waits for the running task; a
    force-stop answers once the execution has ended (``terminated`` says whether the
    workflow had to be terminated because it did not acknowledge the cancel in time).
    """

    execution_id: str
    status: str
    mode: str
    requested_by: str
    requested_at: datetime
    terminated: bool = False


class ExecutionPending(BaseModel):
    """``?wait=`` ran out before the execution ended (HTTP 202): ask again."""

    execution_id: str
    status: str
    waited_seconds: float


class ExecutionCounts(BaseModel):
    """How many of the caller's executions (matching the filters) are in each state."""

    counts: dict[str, int]
    total: int


class FeedbackIn(StrictInput):
    """Human input for a task waiting for review: approve it, or give feedback to redo it."""

    # The documented schema says what the validator below enforces: approve, or feedback
    # with some text in it, never both.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "title": "approve",
                    "required": ["approve"],
                    "properties": {
                        "approve": {"const": True},
                        "feedback": {
                            "anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}]
                        },
                    },
                },
                {
                    "title": "redo with feedback",
                    "required": ["feedback"],
                    "properties": {
                        "approve": {"const": False},
                        "feedback": {"type": "string", "pattern": r"\S"},
                    },
                },
            ]
        }
    )

    approve: bool = False
    feedback: str | None = Field(default=None, max_length=20_000)
    task: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _approve_or_feedback(self) -> FeedbackIn:
        if self.approve and self.feedback:
            raise ValueError("give either approve=true or feedback, not both")
        if not self.approve and not (self.feedback or "").strip():
            raise ValueError('give {"approve": true} or {"feedback": "..."}')
        return self


class FeedbackOut(BaseModel):
    """What the execution will do with the feedback."""

    execution_id: str
    task: str
    approved: bool
    rerun: bool


# -- events -----------------------------------------------------------------------------------

#: Kasal event types as the wire (WebSocket and trace) names them.
WIRE_TYPES: dict[str, str] = {
    EventType.TASK_STARTED: "task_start",
    EventType.TASK_COMPLETED: "task_complete",
    EventType.EXECUTION_COMPLETED: "execution_complete",
    EventType.TASK_FAILED: "error",
    EventType.EXECUTION_FAILED: "error",
}


class EventOut(BaseModel):
    """One event on the wire. ``type`` is the wire name, ``event`` Kasal's own name."""

    type: str
    event: str
    execution_id: str
    offset: int
    timestamp: datetime
    task: str | None = None
    agent: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    #: The Temporal history event (WorkflowTaskStarted) of the workflow task behind this
    #: event: open the workflow's history in the Web UI at this id.
    history_event_id: int | None = None


def wire_event(execution_id: str, event: Event) -> EventOut:
    """The wire form of an event."""
    kind = str(event.type)
    return EventOut(
        type=WIRE_TYPES.get(kind, kind),
        event=kind,
        execution_id=execution_id,
        offset=event.offset or 0,
        timestamp=event.timestamp,
        task=event.task,
        agent=event.agent,
        attempt=event.attempt,
        data=event.data,
        history_event_id=event.history_event_id,
    )


class TraceOut(BaseModel):
    """A page of an execution's events; ask again from ``next_offset`` for more."""

    execution_id: str
    offset: int
    limit: int
    next_offset: int
    finished: bool
    events: list[EventOut]
