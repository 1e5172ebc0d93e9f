"""Determinism: recorded histories must replay on the current workflow code.

A change to ``CrewWorkflow`` that alters the commands it issues for an existing history
(without ``workflow.patched``) fails here before it can break running executions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from kasal.client import start_execution
from tests.helpers import crew
from tests.workflows.probe_workflows import ReorderedCrewWorkflow
from workflows.crew_workflow import CrewWorkflow
from workflows.worker import workflow_runner

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def replayer(*workflows) -> Replayer:
    return Replayer(
        workflows=list(workflows or [CrewWorkflow]),
        workflow_runner=workflow_runner(),
        data_converter=pydantic_data_converter,
    )


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"kasal-exec-{path.stem}", path.read_text())


def test_recorded_histories_exist():
    assert {p.stem for p in HISTORIES} >= {
        "sequential_context_tools",
        "parallel_and_retry",
        "human_input_rerun",
        "hierarchical",
        "failed_non_retryable",
        "cancelled",
        "stopped",
        "webhooks",
        "sequential_context_tools.v0",  # recorded with the first release of the workflow
    }


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_recorded_history_replays(path):
    await replayer().replay_workflow(load(path))


async def test_fresh_history_replays(temporal_client, task_queue, worker):
    spec = crew(
        [
            {"name": "a", "description": "A", "async_execution": True},
            {"name": "b", "description": "B", "context": ["a"]},
        ]
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    await handle.result()
    history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
    await replayer().replay_workflow(history)


async def test_an_incompatible_change_is_caught():
    result = await replayer(ReorderedCrewWorkflow).replay_workflow(
        load(next(p for p in HISTORIES if p.stem == "sequential_context_tools")),
        raise_on_replay_failure=False,
    )
    assert isinstance(result.replay_failure, NondeterminismError)
