"""What an execution looks like from outside: workflow input and result, status, events.

Like :mod:`kasal.spec`, this module is sandbox-safe (no CrewAI, no I/O, no clock).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio.contrib.workflow_streams import WorkflowStreamState

from kasal.spec import CarriedSpec


class ExecutionState(StrEnum):
    """Lifecycle of an execution."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_INPUT = "waiting_for_input"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Stopped gracefully: the running task finished, no further task started.
    STOPPED = "stopped"
    #: Ended outside the workflow's control (terminate from Kasal's force-stop, the Temporal
    #: CLI or Web UI), or by a workflow timeout: reconciled from Temporal's own status.
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        """True once nothing more will happen."""
        return self in (
            self.COMPLETED,
            self.FAILED,
            self.CANCELLED,
            self.STOPPED,
            self.TERMINATED,
            self.TIMED_OUT,
        )


class TaskState(StrEnum):
    """Lifecycle of one task."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING_FOR_INPUT = "waiting_for_input"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventType(StrEnum):
    """Kinds of events in an execution's ordered stream."""

    EXECUTION_STARTED = "execution_started"
    TASK_STARTED = "task_started"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_RETRYING = "task_retrying"
    DELEGATION = "delegation"
    PLANNING_STARTED = "planning_started"
    PLANNING_COMPLETED = "planning_completed"
    EXECUTION_CONTINUED = "execution_continued"
    LLM_CALL = "llm_call"
    TOOL_CALL = "tool_call"
    HUMAN_INPUT_REQUESTED = "human_input_requested"
    EXECUTION_COMPLETED = "execution_completed"
    EXECUTION_FAILED = "execution_failed"
    EXECUTION_CANCELLED = "execution_cancelled"
    #: A task of a replayed execution kept the original's output (no LLM or tool call).
    TASK_REUSED = "task_reused"
    #: The execution was reset (Temporal CLI or Web UI): a new run goes on from here, and
    #: the earlier run's events from this offset on are superseded (listed in ``data``).
    EXECUTION_RESET = "execution_reset"
    #: Someone asked for a graceful stop (who and when in ``data``).
    STOP_REQUESTED = "stop_requested"
    EXECUTION_STOPPED = "execution_stopped"


class TokenUsage(BaseModel):
    """Tokens spent, as providers report them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            requests=self.requests + other.requests,
        )


class Event(BaseModel):
    """One entry of an execution's event stream.

    ``offset`` is the event's position in the stream, filled in when it is read.
    ``event_id`` is unique per event, so a re-sent batch is recognised and dropped.
    """

    model_config = ConfigDict(use_enum_values=True)

    type: EventType
    timestamp: datetime
    task: str | None = None
    agent: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    event_id: str = ""
    offset: int | None = None
    #: Link into the Temporal history: the id of the WorkflowTaskStarted event of the
    #: workflow task that emitted (or accepted) this event. Every event of the history up to
    #: it had happened; the activity or signal behind the event is among them.
    history_event_id: int | None = None


class TaskStatus(BaseModel):
    """Progress of one task, as the status query reports it."""

    name: str
    agent: str
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    output_summary: str | None = None
    error: str | None = None
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    #: Set when the task kept this execution's output instead of running (a replay).
    reused_from: str | None = None
    #: A structured task's output (``output_json`` / ``output_pydantic``), as JSON data.
    json_dict: dict[str, Any] | None = None


class ExecutionStatus(BaseModel):
    """Everything the status query answers."""

    execution_id: str
    crew_name: str
    crew_id: str | None = None
    state: ExecutionState
    started_at: datetime | None = None
    ended_at: datetime | None = None
    tasks: list[TaskStatus]
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    error: str | None = None
    event_count: int = 0
    #: A replay: the execution whose outputs it kept, and the task it re-ran from.
    replay_of: str | None = None
    replay_from_task: str | None = None
    #: How many times this execution was reset from Temporal (CLI or Web UI).
    resets: int = 0
    #: Who asked for a graceful stop, and when (the workflow's clock).
    stop_requested_by: str | None = None
    stop_requested_at: datetime | None = None


class CrewResumeState(BaseModel):
    """What a crew carries into its next run when it continues as new (long crews)."""

    outputs: dict[str, TaskOutput] = Field(default_factory=dict)
    status: ExecutionStatus
    runs: dict[str, int] = Field(default_factory=dict)
    #: The event stream, every event included (the trace query reads them back from it).
    stream: WorkflowStreamState | None = None
    #: How many runs came before this one.
    generation: int = 0
    #: The crew's plan per task (``planning``), made once.
    plans: dict[str, str] | None = None
    #: A graceful stop asked for while this run was ending (it applies to the next).
    stop: StopInput | None = None


class ReplaySeed(BaseModel):
    """What a replay keeps from the execution it re-runs: the outputs of every task before
    ``from_task``. The workflow marks those tasks reused and calls no LLM or tool for them."""

    from_execution: str
    from_task: str
    outputs: dict[str, TaskOutput] = Field(default_factory=dict)


class CrewWorkflowInput(BaseModel):
    """Input of ``CrewWorkflow``. ``spec`` is already validated; inputs fill placeholders."""

    execution_id: str
    spec: CarriedSpec
    inputs: dict[str, Any] = Field(default_factory=dict)
    crew_id: str | None = None
    owner: str | None = None
    #: Continue as new after this many tasks in one run (None: when Temporal suggests it).
    tasks_per_run: int | None = Field(default=None, ge=1)
    resume: CrewResumeState | None = None
    #: Set for a replay (``kasal replay``, ``POST /executions/{id}/replay``).
    seed: ReplaySeed | None = None
    #: The schedule that started this execution, if one did.
    schedule_id: str | None = None
    #: Webhook subscriptions that want this execution's events (looked up at start).
    webhooks: list[WebhookTarget] = Field(default_factory=list)


class WebhookTarget(BaseModel):
    """A webhook subscription as the workflow sees it: which events go to it. The URL and
    secret stay in the database; the delivery activity reads them when it delivers."""

    subscription_id: str
    events: list[str]


class WebhookDeliveryInput(BaseModel):
    """Input of the ``WebhookDelivery`` workflow: one event for some subscriptions.

    ``event_id`` is stable (execution and offset), so a receiver de-duplicates retries and
    redeliveries by it; ``payload`` is the body, fixed once so every retry sends the same.
    """

    event_id: str
    event_type: str
    execution_id: str
    subscriptions: list[str]
    payload: dict[str, Any]


class StopInput(BaseModel):
    """Signal input: stop gracefully (finish the running task, start no new one)."""

    by: str | None = None
    reason: str | None = Field(default=None, max_length=1000)


class WaitingTask(BaseModel):
    """A task waiting for a person: the output to review, since when, until when."""

    task: str
    agent: str
    output: str
    since: datetime
    timeout_seconds: float | None = None


class TaskOutput(BaseModel):
    """The output of one finished task.

    A large output is kept outside workflow history: ``ref`` names its blob and ``raw``
    holds a preview until a client resolves it (``size`` is the full length).
    """

    name: str
    agent: str
    raw: str
    attempts: int
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    ref: str | None = None
    size: int | None = None
    #: CrewAI's ``TaskOutput.json_dict``: a structured task's output as JSON data.
    json_dict: dict[str, Any] | None = None
    #: CrewAI's ``OutputFormat``: ``raw``, ``json`` or ``pydantic``.
    output_format: str = "raw"
    #: Where ``output_file`` was written, relative to the files directory.
    output_file: str | None = None


class CrewWorkflowResult(BaseModel):
    """Result of ``CrewWorkflow``: the final output and every task's output."""

    execution_id: str
    output: str
    tasks: list[TaskOutput]
    token_usage: TokenUsage
    #: Blob of the final output when it is kept outside history (see ``TaskOutput.ref``).
    output_ref: str | None = None
    #: The last task's structured output (CrewAI's ``CrewOutput.json_dict``), if any.
    json_dict: dict[str, Any] | None = None
    #: True when a graceful stop ended the crew early: ``tasks`` holds the finished ones.
    stopped: bool = False

    @property
    def raw(self) -> str:
        """The final output, named as CrewAI's ``CrewOutput.raw``."""
        return self.output

    def __str__(self) -> str:
        return self.output


class JournalRecord(BaseModel):
    """One journaled call of a task attempt: an LLM response or a tool result, paid for once.

    The journal lives in the app database (``activities/journal.py``), not in the workflow.
    """

    seq: int
    #: ``llm`` or ``tool``.
    kind: str = "llm"
    #: Digest of what was asked (the prompt, or the tool and its arguments).
    prompt_hash: str
    response: str
    #: Legacy: a large response kept as a blob (``response`` is then empty).
    ref: str | None = None


class ActivityEventsInput(BaseModel):
    """Signal input: a batch of events a task attempt sends its workflow while it runs.

    The workflow accepts a batch only from the attempt it waits for (``journal_key`` is the
    activity id, ``attempt`` its attempt; an older attempt is stale) and only when
    ``signature`` is a worker's HMAC over it (:mod:`kasal.signing`), so a client that can
    signal the workflow cannot forge events or token usage.
    """

    task: str
    attempt: int = 1
    events: list[Event] = Field(default_factory=list)
    #: Which activity the batch comes from (its activity id); defaults to ``task``.
    journal_key: str = ""
    signature: str | None = None

    def signed_body(self) -> bytes:
        """The bytes the signature covers: the batch without its signature."""
        return self.model_dump_json(exclude={"signature"}).encode()


class TraceQueryInput(BaseModel):
    """Query input: events from ``from_offset``, at most ``limit`` of them (both optional;
    the query may also be sent with no argument: the first thousand events)."""

    from_offset: int = Field(default=0, ge=0)
    limit: int = Field(default=1000, ge=1, le=10_000)


class FeedbackInput(BaseModel):
    """Update input: a human's verdict on a task waiting for review.

    ``approve=True`` accepts the output; otherwise ``feedback`` says what to change and the
    task runs again with it (CrewAI's human-input semantics).
    """

    task: str | None = None
    approve: bool = False
    feedback: str | None = Field(default=None, max_length=20_000)


class FeedbackResult(BaseModel):
    """Update result: what the workflow will do with the feedback."""

    task: str
    approved: bool
    rerun: bool


CrewResumeState.model_rebuild()
ReplaySeed.model_rebuild()
CrewWorkflowInput.model_rebuild()
