"""Alembic environment: async engines, and a connection handed in by the API at start."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from kasal.db.engine import create_engine
from kasal.db.models import Base
from kasal.settings import Settings

config = context.config
target_metadata = Base.metadata

#: Any number, the same in every process: the advisory lock serialising concurrent upgrades.
PG_LOCK_ID = 7_233_003


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on an open connection, one process at a time on PostgreSQL."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_ID})")
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    """Run the migrations from a command line, on an engine of their own."""
    engine = create_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """Emit SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    run_migrations_offline()
elif connection is not None:
    do_run_migrations(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url()
    asyncio.run(run_async_migrations(url))
