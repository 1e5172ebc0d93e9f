"""Workflows that break the rules, for tests of the replay check and the sandbox.

Kept apart from the test modules: the sandbox imports a workflow's module afresh for every
run, so this one imports nothing heavy.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from kasal.constants import CREW_WORKFLOW
from kasal.execution import CrewWorkflowInput


@workflow.defn(name=CREW_WORKFLOW)
class ReorderedCrewWorkflow:
    """An incompatible edit: it runs the crew's last task first."""

    @workflow.run
    async def run(self, data: CrewWorkflowInput) -> None:
        for task in reversed(data.spec.tasks):
            await workflow.execute_activity(
                "run_task",
                task.name,
                activity_id=task.name,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )


@workflow.defn(name="ClockReadingWorkflow")
class ClockReadingWorkflow:
    """Reads the wall clock: a replay on another day would take another path."""

    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()


@workflow.defn(name="EchoWorkflow")
class EchoWorkflow:
    """Returns its input: a workflow that follows the rules, and nothing else."""

    @workflow.run
    async def run(self, text: str) -> str:
        return text
