"""The worker's record activity writes executions the API did not start (CLI, facade)."""

from __future__ import annotations

from kasal.client import start_execution
from kasal.db.engine import session_factory
from kasal.db.models import Execution
from kasal.db.repositories import TraceRepository
from kasal.spec import CrewSpec
from tests.fixtures.api import offline_spec
from tests.fixtures.db import migrated_engine


async def test_a_finished_execution_is_recorded_with_its_trace(
    settings, temporal_client, task_queue, worker
):
    engine = await migrated_engine(settings.resolved_database_url())
    try:
        handle = await start_execution(
            temporal_client, CrewSpec.from_data(offline_spec("cli")), task_queue=task_queue
        )
        result = await handle.result()
        async with session_factory(engine)() as session:
            row = await session.get(Execution, handle.id)
            assert row is not None and row.status == "completed" and row.owner_id is None
            assert row.result["output"] == result.output and row.crew_name == "cli"
            events = await TraceRepository(session).page(handle.id, offset=0, limit=100)
            assert [e.offset for e in events] == list(range(8)) == list(range(row.event_count))
    finally:
        await engine.dispose()
