"""Databases for tests and benchmarks: a fresh database in the local PostgreSQL, migrated
engines."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from kasal.db.engine import create_engine

#: The local PostgreSQL (trust auth); override with KASAL_TEST_POSTGRES_URL.
POSTGRES_URL = os.getenv(
    "KASAL_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def database_url(name: str) -> str:
    """The URL of database ``name`` on the test server."""
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, empty database (dropped afterwards); yields its URL.

    A database rather than a schema: the API and the worker then reach it through a plain
    ``KASAL_DATABASE_URL``, exactly as in production.
    """
    name = f"kasal_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, pooled=False, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield database_url(name)
    finally:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


async def migrated_engine(url: str) -> AsyncEngine:
    """An engine on ``url`` with every migration applied."""
    from kasal.db.migrate import migrate

    engine = create_engine(url)
    await migrate(engine)
    return engine
