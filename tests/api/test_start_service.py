"""The execution-start service on its own: plain values in, no request, no ORM user.

Real database and real Temporal; the failure is real too (a namespace the server does not
have refuses every start), so compensation is tested without a mock.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from api.services.executions import (
    StartRequest,
    WorkflowOptions,
    resolve_spec,
    start_execution_for,
)
from kasal.client import connect
from kasal.db.engine import session_factory
from kasal.db.models import Execution
from kasal.db.repositories import UserRepository
from kasal.exceptions import TemporalUnavailableError
from tests.fixtures.api import offline_spec
from tests.fixtures.db import migrated_engine


@pytest.fixture
async def sessions(tmp_path):
    engine = await migrated_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def owner_id(sessions):
    async with sessions() as session, session.begin():
        return (await UserRepository(session).create("o@example.com", "hash")).id


async def rows(sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Execution)) or 0)


async def test_a_start_temporal_refuses_leaves_no_row_and_the_key_free(
    sessions, owner_id, temporal_server, temporal_client, task_queue
):
    refusing = await connect(temporal_server.address, "no-such-namespace")
    request = StartRequest(owner_id, None, offline_spec(), {}, idempotency_key="k1")
    options = WorkflowOptions(task_queue=task_queue, search_attributes=False)
    async with sessions() as session:
        spec = await resolve_spec(session, request)
        with pytest.raises(TemporalUnavailableError):
            await start_execution_for(session, refusing, request, spec, options)
    assert await rows(sessions) == 0  # compensated: nothing half-written
    # The same key works once Temporal does: the failed try did not keep it.
    async with sessions() as session:
        started = await start_execution_for(session, temporal_client, request, spec, options)
        again = await start_execution_for(session, temporal_client, request, spec, options)
    assert again.execution_id == started.execution_id and await rows(sessions) == 1
    await temporal_client.get_workflow_handle(started.workflow_id).terminate("test over")
