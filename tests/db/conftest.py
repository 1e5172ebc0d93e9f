"""Repository tests run on SQLite and on the local PostgreSQL, each on a fresh database."""

from __future__ import annotations

import pytest

from kasal.db.engine import session_factory
from tests.fixtures.db import migrated_engine, postgres_available, postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path):
    """A migrated, empty database of each backend; yields its URL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'repo.db'}"
        return
    if not await postgres_available():
        pytest.skip("PostgreSQL is not reachable at the test URL")
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def sessions(db_url):
    """A session factory on the migrated database."""
    engine = await migrated_engine(db_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
