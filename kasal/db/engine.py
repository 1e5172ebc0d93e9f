"""The async engine and session factory, tuned per backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import NullPool


def create_engine(
    url: str,
    *,
    pooled: bool = True,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    SQLite gets WAL, a busy timeout and enforced foreign keys, and its parent directory is
    created. ``pooled=False`` opens a connection per session: right for processes that write
    rarely (the worker records one row per execution) and need no disposal at exit.
    A pooled server database keeps ``pool_size`` connections and opens up to
    ``max_overflow`` more; by default ``KASAL_DB_POOL_SIZE`` / ``KASAL_DB_MAX_OVERFLOW``.
    """
    parsed = make_url(url)
    options: dict[str, Any] = dict(kwargs)
    if not pooled:
        options["poolclass"] = NullPool
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
    else:
        options.setdefault("pool_pre_ping", True)
        if pooled:
            from kasal.settings import get_settings

            settings = get_settings()
            options["pool_size"] = settings.db_pool_size if pool_size is None else pool_size
            options["max_overflow"] = (
                settings.db_max_overflow if max_overflow is None else max_overflow
            )
    engine = _create_async_engine(url, **options)
    if sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
