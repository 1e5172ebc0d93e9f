"""Where task attempts journal the calls they paid for: a table in the app database.

Every worker reaches the app database, so a retried attempt on any worker reads what the
attempts before it paid for without waiting on its workflow, and no Temporal client can
write into it. Each attempt writes only rows of its own; :func:`merge_attempts` rebuilds the
journal a new attempt replays, so a stale attempt still running can add nothing a newer
attempt has superseded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from kasal.db.models import JournalEntry
from kasal.execution import JournalRecord

#: ``seq`` of the row an attempt writes when it starts: it marks the attempt as the newest.
START_MARK = -1


@dataclass(frozen=True)
class AttemptKey:
    """One attempt of one activity of one workflow run."""

    workflow_id: str
    run_id: str
    activity_id: str
    attempt: int


def merge_attempts(rows: Iterable[tuple[int, JournalRecord]]) -> list[JournalRecord]:
    """The journal that attempts' rows add up to, oldest attempt first.

    An attempt replays the journal up to where its prompts differ, then writes from there:
    what an earlier attempt wrote from that position on is superseded by what it wrote.
    """
    by_attempt: dict[int, list[JournalRecord]] = {}
    for attempt, record in rows:
        by_attempt.setdefault(attempt, []).append(record)
    journal: list[JournalRecord] = []
    for attempt in sorted(by_attempt):
        records = sorted(by_attempt[attempt], key=lambda r: r.seq)
        first = records[0].seq
        journal = journal[:first] + records
    return journal


#: The newest attempt that has started, per activity, of some workflows: only attempts after
#: the first write a start mark, so the rows read are few. Built once (one SQL text cached).
_NEWEST_STARTED = (
    select(
        JournalEntry.workflow_id,
        JournalEntry.run_id,
        JournalEntry.activity_id,
        func.max(JournalEntry.attempt),
    )
    .where(
        JournalEntry.workflow_id.in_(bindparam("workflow_ids", expanding=True)),
        JournalEntry.seq == START_MARK,
    )
    .group_by(JournalEntry.workflow_id, JournalEntry.run_id, JournalEntry.activity_id)
)
#: Workflow ids per query of :meth:`JournalStore.newest_attempts` (SQLite's bound limit).
NEWEST_CHUNK = 500


class JournalStore:
    """Reads and writes attempts' journals."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]

    async def begin(self, key: AttemptKey) -> list[JournalRecord]:
        """Mark ``key`` as the activity's newest attempt; the journal it may replay.

        A first attempt supersedes nothing and has nothing to replay: no query at all.
        """
        if key.attempt == 1:
            return []
        await self.append(key, JournalRecord(seq=START_MARK, prompt_hash="", response=""))
        async with self.sessions() as session:
            result = await session.execute(
                select(JournalEntry).where(
                    JournalEntry.workflow_id == key.workflow_id,
                    JournalEntry.run_id == key.run_id,
                    JournalEntry.activity_id == key.activity_id,
                    JournalEntry.attempt < key.attempt,
                    JournalEntry.seq >= 0,
                )
            )
            return merge_attempts(
                (
                    row.attempt,
                    JournalRecord(
                        seq=row.seq, kind=row.kind, prompt_hash=row.digest, response=row.response
                    ),
                )
                for row in result.scalars()
            )

    async def append(self, key: AttemptKey, record: JournalRecord) -> None:
        """Journal one paid call; durable when this returns.

        One INSERT on a pooled connection, not through a session's unit of work: it is on
        the path of every paid call (SQLite, measured: 1.3 -> 0.6 ms a call, 1.1 -> 0.5 ms
        of CPU)."""
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(JournalEntry), [_values(key, record.seq, record)])
        except IntegrityError:
            # Only this attempt writes its rows: the same row again is a retried write.
            pass

    async def newest_attempt(self, key: AttemptKey) -> int:
        """The newest attempt of the activity that has started after the first (0: none)."""
        return (await self.newest_attempts([key])).get(key, 0)

    async def newest_attempts(self, keys: Iterable[AttemptKey]) -> dict[AttemptKey, int]:
        """For each of ``keys``, the newest attempt of its activity that has started after
        the first (absent: none has): one query for a whole worker's running attempts."""
        wanted: dict[tuple[str, str, str], list[AttemptKey]] = {}
        for key in keys:
            wanted.setdefault((key.workflow_id, key.run_id, key.activity_id), []).append(key)
        workflow_ids = sorted({workflow_id for workflow_id, _, _ in wanted})
        newest: dict[AttemptKey, int] = {}
        async with self.sessions() as session:
            for start in range(0, len(workflow_ids), NEWEST_CHUNK):
                chunk = workflow_ids[start : start + NEWEST_CHUNK]
                rows = await session.execute(_NEWEST_STARTED, {"workflow_ids": chunk})
                for workflow_id, run_id, activity_id, attempt in rows:
                    for key in wanted.get((workflow_id, run_id, activity_id), ()):
                        newest[key] = int(attempt)
        return newest

    async def forget(self, workflow_id: str) -> None:
        """Drop every journal of a finished execution (all its runs)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(JournalEntry).where(JournalEntry.workflow_id == workflow_id)
            )


def _values(key: AttemptKey, seq: int, record: JournalRecord) -> dict[str, object]:
    return {
        "workflow_id": key.workflow_id,
        "run_id": key.run_id,
        "activity_id": key.activity_id,
        "attempt": key.attempt,
        "seq": seq,
        "kind": record.kind,
        "digest": record.prompt_hash,
        "response": record.response,
    }
