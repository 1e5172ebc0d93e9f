"""Retention: Kasal's own Temporal schedule purges finished executions older than the
retention period, with their traces, journals and the blobs only they use."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from kasal.constants import RETENTION_SCHEDULE_ID
from kasal.db.engine import create_engine, session_factory
from kasal.db.migrate import migrate
from kasal.db.models import Blob, Execution, TraceEvent
from kasal.schedules import ensure_retention_schedule
from tests.fixtures.temporal import running_worker


def finished_row(execution_id: str, ended: datetime, blob: str | None = None) -> Execution:
    result = {"execution_id": execution_id, "output": "x", "tasks": [], "token_usage": {}}
    if blob:
        result["output_ref"] = blob
    return Execution(
        id=execution_id,
        workflow_id=f"kasal-exec-{execution_id}",
        crew_name="old",
        status="completed",
        spec={},
        inputs={},
        ended_at=ended,
        result=result,
    )


async def test_the_retention_schedule_purges_old_executions(settings, temporal_client, task_queue):
    engine = create_engine(settings.resolved_database_url())
    await migrate(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        session.add(Blob(id="a" * 64, size=1, data="x"))
        session.add(Blob(id="b" * 64, size=1, data="y"))
        session.add(finished_row("1" * 32, now - timedelta(days=10), blob="a" * 64))
        session.add(finished_row("2" * 32, now - timedelta(hours=1), blob="b" * 64))
        session.add(
            TraceEvent(execution_id="1" * 32, offset=0, type="execution_started", timestamp=now)
        )
    try:
        configured = settings.model_copy(update={"retention_days": 7})
        async with running_worker(temporal_client, task_queue, configured):
            handle = temporal_client.get_schedule_handle(RETENTION_SCHEDULE_ID)
            description = await handle.describe()
            assert description.schedule.spec.intervals[0].every == timedelta(hours=1)
            await handle.trigger()
            for _ in range(200):
                async with sessions() as session:
                    if await session.get(Execution, "1" * 32) is None:
                        break
                await asyncio.sleep(0.1)
        async with sessions() as session:
            assert await session.get(Execution, "1" * 32) is None
            assert await session.get(Execution, "2" * 32) is not None  # within the period
            traces = await session.scalar(select(func.count()).select_from(TraceEvent))
            assert traces == 0
            assert await session.get(Blob, "a" * 64) is None
            assert await session.get(Blob, "b" * 64) is not None
    finally:
        # 0 leaves it alone (a worker without the setting must not undo another's).
        assert not await ensure_retention_schedule(temporal_client, 0, task_queue=task_queue)
        await temporal_client.get_schedule_handle(RETENTION_SCHEDULE_ID).describe()
        await temporal_client.get_schedule_handle(RETENTION_SCHEDULE_ID).delete()
        await engine.dispose()
