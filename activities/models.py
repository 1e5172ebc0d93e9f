"""Inputs and results of Kasal's activities, and their names.

Workflows import this module (through the sandbox) to call activities by name, so it must not
import CrewAI or anything else heavy or non-deterministic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from kasal.execution import (
    CrewWorkflowResult,
    Event,
    ExecutionStatus,
    TokenUsage,
    WebhookTarget,
)
from kasal.spec import CarriedSpec

#: Activity type names, shared by the worker (registration) and the workflow (calls).
RUN_TASK = "run_task"
RECORD_EXECUTION = "record_execution"


class RunTaskInput(BaseModel):
    """Run one task of a crew. ``spec`` is already interpolated with the execution's inputs."""

    execution_id: str
    spec: CarriedSpec
    task: str
    #: Outputs of the tasks this one sees, in crew order: task name -> raw output.
    context: dict[str, str] = Field(default_factory=dict)
    #: For context outputs kept outside history: task name -> blob id (resolved first).
    context_refs: dict[str, str] = Field(default_factory=dict)
    #: A hierarchical task's delegation: who does it, and what exactly.
    agent_override: str | None = None
    description_override: str | None = None
    expected_output_override: str | None = None
    #: Human feedback on a previous output of this task (re-run with it).
    feedback: str | None = None
    previous_output: str | None = None
    #: The crew's plan for this task (``planning``), appended to its description.
    plan: str | None = None
    #: Whose memory and knowledge the task uses (the crew's id, else its name; the owner).
    crew_id: str | None = None
    owner: str | None = None


class RunTaskResult(BaseModel):
    """What a task produced."""

    raw: str
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    llm_calls: int = 0
    replayed_calls: int = 0
    attempt: int = 1
    #: Set when the output was too large for history: ``raw`` is then a preview.
    ref: str | None = None
    size: int | None = None
    #: The attempt's events not yet signalled (its last calls): the workflow adds them.
    events: list[Event] = Field(default_factory=list)
    json_dict: dict[str, Any] | None = None
    output_format: str = "raw"
    output_file: str | None = None


class RecordExecutionInput(BaseModel):
    """Persist a finished execution: its final status, result, and its events (given to
    the local activity that records it; an older workflow's activity reads them through the
    trace query, so history stays small either way)."""

    workflow_id: str
    status: ExecutionStatus
    result: CrewWorkflowResult | None = None
    owner: str | None = None
    #: The run's trace, given to a local activity (not stored in history); None: the
    #: activity reads it through the trace query.
    events: list[Event] | None = None


class RecordExecutionResult(BaseModel):
    """How many events were stored."""

    events: int = 0


MANAGER_STEP = "manager_step"


class DelegationRecord(BaseModel):
    """One finished delegation of a hierarchical task, as the manager sees it next step."""

    coworker: str
    task: str
    result: str
    #: A result too large for history is a blob; ``result`` is then a preview.
    ref: str | None = None


class ManagerStepInput(BaseModel):
    """Ask the manager of a hierarchical crew for its next decision on ``task``."""

    execution_id: str
    spec: CarriedSpec
    task: str
    step: int
    context: dict[str, str] = Field(default_factory=dict)
    context_refs: dict[str, str] = Field(default_factory=dict)
    history: list[DelegationRecord] = Field(default_factory=list)
    #: Why the previous answer was rejected (unparseable, unknown coworker), if it was.
    correction: str | None = None


class ManagerDecision(BaseModel):
    """The manager's decision: ``delegate`` work to a coworker, or a ``final`` answer.

    ``invalid`` means the answer could not be understood; ``problem`` says why.
    """

    action: Literal["delegate", "final", "invalid"]
    coworker: str | None = None
    task: str | None = None
    context: str | None = None
    answer: str | None = None
    problem: str | None = None
    raw: str = ""
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    attempt: int = 1
    #: The step's events not yet signalled: the workflow adds them.
    events: list[Event] = Field(default_factory=list)


STASH_OUTPUTS = "stash_outputs"


class StashOutputsInput(BaseModel):
    """Outputs to move out of a workflow's state before it continues as new."""

    texts: dict[str, str]


class StashOutputsResult(BaseModel):
    """Blob id per stashed output (empty if the worker has no blob store)."""

    refs: dict[str, str] = Field(default_factory=dict)


PLAN_CREW = "plan_crew"


class PlanCrewInput(BaseModel):
    """Make the crew's plan (CrewAI's ``planning``): one plan per task, made once."""

    execution_id: str
    spec: CarriedSpec


class PlanCrewResult(BaseModel):
    """The plan per task name (text CrewAI appends to the task's description)."""

    plans: dict[str, str] = Field(default_factory=dict)
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    attempt: int = 1
    #: The planner's events not yet signalled: the workflow adds them.
    events: list[Event] = Field(default_factory=list)


# -- operations: scheduled runs, webhooks, retention (issue 9) ---------------------------------

PREPARE_SCHEDULED_RUN = "prepare_scheduled_run"
DELIVER_WEBHOOK = "deliver_webhook"
PURGE_EXPIRED = "purge_expired"


class ScheduledRunInput(BaseModel):
    """Input of one run of a schedule (the Temporal Schedule's action).

    A schedule made through the API names its database row, which says what to run when
    the run starts (so edits apply to the next run); ``spec``/``inputs``/``owner`` are the
    fallback for schedules made without one (``kasal schedule`` on the command line).
    """

    schedule_id: str
    crew_id: str | None = None
    spec: dict[str, Any] | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    owner: str | None = None
    search_attributes: bool = True


class PrepareRunInput(BaseModel):
    """Write the execution row of a scheduled run and say what it runs."""

    run: ScheduledRunInput
    execution_id: str
    workflow_id: str


class PreparedRun(BaseModel):
    """What a scheduled run starts (``skip`` when its schedule no longer exists)."""

    skip: bool = False
    spec: CarriedSpec | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    crew_id: str | None = None
    owner: str | None = None
    webhooks: list[WebhookTarget] = Field(default_factory=list)


class DeliverWebhookInput(BaseModel):
    """Deliver one event to one subscription (one attempt per activity attempt)."""

    subscription_id: str
    event_id: str
    event_type: str
    execution_id: str | None
    payload: dict[str, Any]


class DeliverWebhookResult(BaseModel):
    """The receiver's answer."""

    status_code: int | None = None
    skipped: str | None = None


class PurgeInput(BaseModel):
    """Purge finished executions that ended more than ``retention_days`` ago."""

    retention_days: float


class PurgeResult(BaseModel):
    """How many executions were purged."""

    purged: int = 0
