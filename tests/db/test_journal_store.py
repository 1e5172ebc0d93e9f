"""The journal of paid calls, on SQLite and PostgreSQL."""

from __future__ import annotations

from kasal.db.journal import AttemptKey, JournalStore, merge_attempts
from kasal.execution import JournalRecord


def rec(seq: int, response: str) -> JournalRecord:
    return JournalRecord(seq=seq, prompt_hash=f"h{seq}", response=response)


def test_merge_keeps_what_each_newer_attempt_rewrote():
    rows = [
        (1, rec(0, "a0")),
        (1, rec(1, "a1")),
        (1, rec(2, "a2")),
        (2, rec(1, "b1")),  # attempt 2 replayed a0, then its prompt changed at 1
        (1, rec(3, "a3")),  # a stale attempt 1 still writing: superseded from 1 on
        (3, rec(2, "c2")),
    ]
    assert [r.response for r in merge_attempts(rows)] == ["a0", "b1", "c2"]
    assert merge_attempts([]) == []


async def test_attempts_read_what_earlier_attempts_paid_for(sessions):
    store = JournalStore(sessions)
    first = AttemptKey("wf", "run", "task", 1)
    assert await store.begin(first) == []
    await store.append(first, rec(0, "x" * 100_000))  # large responses stay whole
    await store.append(first, rec(0, "x" * 100_000))  # a retried write is a no-op
    await store.append(first, rec(1, "second"))
    second = AttemptKey("wf", "run", "task", 2)
    journal = await store.begin(second)
    assert [(r.seq, len(r.response)) for r in journal] == [(0, 100_000), (1, 6)]
    # Attempt 1 learns it is stale; other activities, runs and workflows are apart.
    assert await store.newest_attempt(first) == 2
    assert await store.begin(AttemptKey("wf", "run2", "task", 2)) == []
    assert await store.begin(AttemptKey("wf", "run", "other", 2)) == []
    await store.forget("wf")
    assert await store.newest_attempt(first) == 0
