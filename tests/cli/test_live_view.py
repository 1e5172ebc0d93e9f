"""The live view of ``kasal run``: every event kind a crew emits has a line, naming who worked."""

from __future__ import annotations

from datetime import UTC, datetime

from cli.main import _describe
from kasal.execution import Event, EventType


def event(kind: EventType, **fields) -> Event:
    return Event(type=kind, timestamp=datetime.now(UTC), **fields)


def test_delegations_are_shown_with_the_coworker():
    line = _describe(
        event(
            EventType.DELEGATION,
            task="report",
            agent="researcher",
            data={"step": 2, "coworker": "researcher", "work": "Find the\nprices of tea"},
        ),
        hierarchical=True,
    )
    assert line is not None
    assert "report" in line and "delegated to [bold]researcher[/]" in line
    assert "step 2" in line and "Find the prices of tea" in line


def test_continue_as_new_is_shown():
    line = _describe(
        event(EventType.EXECUTION_CONTINUED, data={"generation": 1, "completed_tasks": 3})
    )
    assert line is not None and "continued as new" in line and "3 tasks done" in line


def test_work_lines_name_the_agent_that_did_the_work_not_the_tasks_agent():
    # In a hierarchical crew the task names "writer", but the manager had "researcher" do it.
    started = _describe(
        event(EventType.TASK_STARTED, task="report", agent="writer", attempt=1),
        hierarchical=True,
    )
    assert started is not None and "writer" not in started and "manager" in started
    call = _describe(
        event(
            EventType.LLM_CALL,
            task="report",
            agent="researcher",
            data={"model": "offline/r", "prompt_tokens": 3, "completion_tokens": 4},
        )
    )
    assert call is not None and "researcher" in call and "7 tokens" in call
    tool = _describe(
        event(EventType.TOOL_CALL, task="report", agent="researcher", data={"tool": "calc"})
    )
    assert tool is not None and "researcher" in tool and "calc" in tool
    # A sequential task is done by its own agent: the start line says so.
    sequential = _describe(event(EventType.TASK_STARTED, task="brief", agent="writer"))
    assert sequential is not None and "started by writer" in sequential


def test_every_event_kind_has_a_line():
    for kind in EventType:
        assert _describe(event(kind, task="t", agent="a")) is not None, kind
