"""The workflow's bookkeeping (status, events, which reports to trust), without Temporal."""

from __future__ import annotations

from datetime import UTC, datetime

from kasal.execution import (
    ActivityEventsInput,
    Event,
    EventType,
    ExecutionState,
    ExecutionStatus,
    TaskState,
    TaskStatus,
)
from workflows.bookkeeping import ExecutionBook

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def book() -> tuple[ExecutionBook, list[Event]]:
    published: list[Event] = []
    status = ExecutionStatus(
        execution_id="e",
        crew_name="c",
        state=ExecutionState.RUNNING,
        tasks=[TaskStatus(name="t", agent="a"), TaskStatus(name="u", agent="a")],
    )
    return ExecutionBook(status, publish=published.append), published


def llm_call(event_id: str, tokens: int = 10, attempt: int = 1) -> Event:
    return Event(
        type=EventType.LLM_CALL,
        timestamp=NOW,
        task="t",
        attempt=attempt,
        event_id=event_id,
        data={"prompt_tokens": tokens, "completion_tokens": tokens},
    )


def batch(*events: Event, attempt: int = 1, key: str = "t") -> ActivityEventsInput:
    return ActivityEventsInput(task="t", attempt=attempt, events=list(events), journal_key=key)


def test_emitted_events_get_offsets_ids_and_are_published():
    b, published = book()
    first = b.emit(EventType.EXECUTION_STARTED, NOW)
    second = b.emit(EventType.TASK_STARTED, NOW, task="t", agent="a", attempt=1)
    assert [(e.offset, e.event_id) for e in b.events] == [(0, "wf-0"), (1, "wf-1")]
    assert published == [first, second] and b.status.event_count == 2


def test_only_signed_reports_from_the_running_attempt_are_trusted():
    b, _ = book()
    assert b.why_rejected(batch(llm_call("x")), authentic=True) == (
        "from an activity that is not running"
    )
    b.activity_started("t")
    assert b.why_rejected(batch(llm_call("x")), authentic=False) == "unsigned or wrongly signed"
    assert b.why_rejected(batch(llm_call("x")), authentic=True) is None
    b.accept(batch(llm_call("x", attempt=2), attempt=2))
    # Attempt 1 is stale once attempt 2 reported: it may neither add events nor tokens.
    assert "superseded by 2" in (b.why_rejected(batch(llm_call("y")), authentic=True) or "")
    b.activity_ended("t")
    assert b.why_rejected(batch(llm_call("z", attempt=2), attempt=2), authentic=True)


def test_accepted_reports_count_tokens_once_and_move_the_task():
    b, published = book()
    b.activity_started("t")
    b.task_running("t", NOW)
    call = llm_call("a-1", tokens=5)
    b.accept(batch(call))
    b.accept(batch(call))  # the same batch re-sent
    replayed = llm_call("a-2", tokens=7)
    replayed.data["replayed"] = True
    b.accept(batch(replayed))
    assert [e.event_id for e in published] == ["a-1", "a-2"]
    assert b.status.token_usage.total_tokens == 10 and b.status.token_usage.requests == 1
    retrying = Event(
        type=EventType.TASK_RETRYING, timestamp=NOW, task="t", data={"next_attempt": 2}
    )
    b.accept(batch(retrying))
    assert b.task("t").state == TaskState.RETRYING and b.task("t").attempts == 2


def test_a_finished_execution_takes_no_more_reports():
    b, _ = book()
    b.activity_started("t")
    b.set_state(ExecutionState.COMPLETED)
    assert b.why_rejected(batch(llm_call("x")), authentic=True)


def test_cancel_unfinished_leaves_finished_tasks_alone():
    b, _ = book()
    b.task_running("t", NOW)
    b.task_failed("u", NOW, "boom")
    b.cancel_unfinished(NOW)
    assert [t.state for t in b.status.tasks] == [TaskState.CANCELLED, TaskState.FAILED]
    assert b.task("t").ended_at == NOW and b.task("u").error == "boom"
