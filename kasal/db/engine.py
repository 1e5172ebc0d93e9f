"""The async engine and session factory, tuned per backend."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
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
    in_memory = sqlite and parsed.database in (None, "", ":memory:")
    if sqlite:
        if not in_memory:
            from pathlib import Path

            Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
    ping_after_idle: float | None = None
    if pooled and not in_memory:
        from kasal.settings import get_settings

        settings = get_settings()
        size = settings.db_pool_size if pool_size is None else pool_size
        overflow = settings.db_max_overflow if max_overflow is None else max_overflow
        if sqlite:
            # Every aiosqlite connection is a thread of its own: an overflow connection,
            # opened for a burst and closed after it, started a thread (and ran the
            # pragmas) per session; with 200 crews finishing at once, 4% of the worker's
            # CPU. A file's connections are cheap to keep: as many as before, all kept.
            size, overflow = size + overflow, 0
        options["pool_size"] = size
        options["max_overflow"] = overflow
    if not sqlite:
        if pooled and "pool_pre_ping" not in options and settings.db_ping_after_idle > 0:
            ping_after_idle = settings.db_ping_after_idle
            options["pool_pre_ping"] = False
        options.setdefault("pool_pre_ping", True)
    engine = _create_async_engine(url, **options)
    if ping_after_idle is not None:
        _ping_when_idle(engine, ping_after_idle)
    if sqlite:
        _skip_idle_transaction_ends(engine)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def _ping_when_idle(engine: AsyncEngine, seconds: float) -> None:
    """Pre-ping a pooled connection only if it was checked in ``seconds`` ago or more.

    SQLAlchemy's pre-ping runs on every checkout; asyncpg's costs BEGIN, a statement and
    ROLLBACK, as many round trips as a whole status read. A connection returned a moment ago
    is alive; one that sat idle (where a restarted database or a proxy's idle timeout bites)
    is checked as before, and replaced if the check fails.
    """
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _used(_dbapi_connection: Any, record: Any) -> None:
        record.info["kasal_checked_in"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get("kasal_checked_in")
        if checked_in is None or time.monotonic() - checked_in < seconds:
            return  # new, or in use a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pre-ping failed: {exc}") from exc
        if not alive:
            raise DisconnectionError("pre-ping failed")


def _skip_idle_transaction_ends(engine: AsyncEngine) -> None:
    """COMMIT and ROLLBACK only when SQLite has a transaction open.

    The sqlite3 driver opens one only before a write, so after reads (every GET) there is
    nothing to end; through aiosqlite each end is still a hop to the connection's thread
    and back, a third of a status read's database time. The check reads SQLite's own
    autocommit flag, so a transaction however begun is still ended.
    """
    dialect = engine.sync_engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def open_transaction(connection: Any) -> bool:
        try:
            return bool(connection.dbapi_connection._connection.in_transaction)
        except Exception:  # closed, or not the aiosqlite adapter: end it as usual
            return True

    def do_commit(connection: Any) -> None:
        if open_transaction(connection):
            commit(connection)

    def do_rollback(connection: Any) -> None:
        if open_transaction(connection):
            rollback(connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
