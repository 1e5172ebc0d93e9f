"""Applying the Alembic migrations: by the API at start, and by workers before they record."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config() -> Config:
    """The Alembic configuration shipped with the package."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.with_name("migrations")))
    return config


def sqlite_lock_path(url: str) -> Path | None:
    """The lock file beside a SQLite database file, or None (another backend, in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).with_name(Path(parsed.database).name + ".migrate.lock")


@contextlib.asynccontextmanager
async def _sqlite_lock(url: str) -> AsyncIterator[None]:
    """Hold a file lock beside a SQLite file for the block (nothing for other backends).

    SQLite has no advisory lock, and two processes that both find no schema (two workers
    starting together on one data directory) would both create it: "table users already
    exists". The second one waits here, then finds the schema up to date.
    """
    path = sqlite_lock_path(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # flock, not a new dependency: the kernel releases it if the holder dies mid-migration.
    with open(path, "a") as handle:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` on the engine's own connection.

    Safe to run from several processes at once: on PostgreSQL an advisory lock serialises
    the upgrades, on SQLite a file lock beside the database file does, and an up-to-date
    schema is left alone.
    """

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    url = engine.url.render_as_string(hide_password=False)
    async with _sqlite_lock(url), engine.begin() as connection:
        await connection.run_sync(upgrade)
