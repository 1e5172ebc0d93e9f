"""The engine's cheap paths keep their guarantees: SQLite still ends every transaction that
was opened, and a pooled PostgreSQL connection that sat idle is still checked before use."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from kasal.db.engine import create_engine, session_factory
from tests.fixtures.db import POSTGRES_URL, postgres_available


async def test_sqlite_commits_writes_and_rolls_back_unfinished_ones(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        async with sessions() as session:
            await session.execute(text("SELECT 1"))  # a read opens no transaction
            await session.execute(text("INSERT INTO t VALUES (1)"))
            await session.commit()
        async with sessions() as session:
            await session.execute(text("INSERT INTO t VALUES (2)"))  # closed, not committed
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
            await session.commit()  # nothing to end: no hop, no error
            assert (await session.scalar(text("SELECT count(*) FROM t"))) == 1
        # The uncommitted write left no lock behind: another connection can write.
        async with sessions() as one, sessions() as two:
            await one.execute(text("INSERT INTO t VALUES (3)"))
            await one.commit()
            await two.execute(text("INSERT INTO t VALUES (4)"))
            await two.commit()
    finally:
        await engine.dispose()


async def test_postgres_replaces_an_idle_connection_that_died(monkeypatch):
    if not await postgres_available():
        pytest.skip("PostgreSQL is not reachable at the test URL")
    from kasal.settings import get_settings

    monkeypatch.setattr(get_settings(), "db_ping_after_idle", 0.2)
    engine = create_engine(POSTGRES_URL)
    admin = create_engine(POSTGRES_URL, pooled=False, isolation_level="AUTOCOMMIT")
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with admin.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.3)  # idle past the threshold: pinged, found dead, replaced
        async with sessions() as session:
            assert await session.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        await engine.dispose()
        await admin.dispose()
