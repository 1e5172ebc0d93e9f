"""Deleting executions for good: rows, traces, journals and the blobs only they use.

Used by ``DELETE /executions/{id}`` and by the retention schedule's activity.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kasal.db.models import Blob, Execution, JournalEntry, TraceEvent
from kasal.db.repositories import FINISHED


def blob_ids(execution: Execution) -> set[str]:
    """Blobs an execution's stored result names."""
    refs: set[str] = set()
    result = execution.result or {}
    if result.get("output_ref"):
        refs.add(result["output_ref"])
    refs.update(t["ref"] for t in result.get("tasks", []) if t.get("ref"))
    for task in (execution.status_detail or {}).get("tasks", []):
        if task.get("ref"):
            refs.add(task["ref"])
    return refs


async def purge(sessions: async_sessionmaker[AsyncSession], execution_ids: list[str]) -> int:
    """Delete executions (rows, traces, journals, blobs only they used); returns how many."""
    if not execution_ids:
        return 0
    async with sessions() as session, session.begin():
        rows = (
            await session.scalars(select(Execution).where(Execution.id.in_(execution_ids)))
        ).all()
        refs: set[str] = set()
        for row in rows:
            refs |= blob_ids(row)
        workflow_ids = [r.workflow_id for r in rows]
        if workflow_ids:
            await session.execute(
                delete(JournalEntry).where(JournalEntry.workflow_id.in_(workflow_ids))
            )
        ids = [r.id for r in rows]
        await session.execute(delete(TraceEvent).where(TraceEvent.execution_id.in_(ids)))
        for row in rows:
            await session.delete(row)
        await session.flush()
        # Blobs are content-addressed and may be shared: keep those another row still names.
        if refs:
            others = (
                await session.scalars(
                    select(Execution).where(Execution.result.is_not(None)).limit(10_000)
                )
            ).all()
            for other in others:
                refs -= blob_ids(other)
            if refs:
                await session.execute(delete(Blob).where(Blob.id.in_(refs)))
    return len(rows)


async def expired(
    sessions: async_sessionmaker[AsyncSession], before: datetime, limit: int = 500
) -> list[str]:
    """Ids of finished executions that ended before ``before`` (oldest first)."""
    async with sessions() as session:
        rows = await session.scalars(
            select(Execution.id)
            .where(Execution.status.in_(FINISHED), Execution.ended_at < before)
            .order_by(Execution.ended_at)
            .limit(limit)
        )
        return list(rows.all())
