"""Inputs and results of Kasal's activities, and their names.

Workflows import this module (through the sandbox) to call activities by name, so it must not
import CrewAI or anything else heavy or non-deterministic.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from kasal.execution import CrewWorkflowResult, ExecutionStatus, JournalRecord, TokenUsage
from kasal.spec import CrewSpec

#: Activity type names, shared by the worker (registration) and the workflow (calls).
RUN_TASK = "run_task"
RECORD_EXECUTION = "record_execution"


#: One journaled LLM response (the workflow keeps them per task).
JournalEntry = JournalRecord


class RunTaskInput(BaseModel):
    """Run one task of a crew. ``spec`` is already interpolated with the execution's inputs."""

    execution_id: str
    spec: CrewSpec
    task: str
    #: Outputs of the tasks this one sees, in crew order: task name -> raw output.
    context: dict[str, str] = Field(default_factory=dict)
    #: Human feedback on a previous output of this task (re-run with it).
    feedback: str | None = None
    previous_output: str | None = None


class RunTaskResult(BaseModel):
    """What a task produced."""

    raw: str
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    llm_calls: int = 0
    replayed_calls: int = 0
    attempt: int = 1


class RecordExecutionInput(BaseModel):
    """Persist a finished execution: its final status, result, and (read by the activity
    through the trace query, so history stays small) its events."""

    workflow_id: str
    status: ExecutionStatus
    result: CrewWorkflowResult | None = None
    spec_name: str
    crew_id: str | None = None
    owner: str | None = None


class RecordExecutionResult(BaseModel):
    """How many events were stored."""

    events: int = 0
