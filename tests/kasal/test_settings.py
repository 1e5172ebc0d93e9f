"""Settings read the documented names: ``KASAL_*``, the common aliases, and a ``.env`` file."""

from __future__ import annotations

import asyncio

import pytest

from kasal.db.engine import create_engine
from kasal.settings import Settings, get_settings

ALIASED = ("DATABASE_URL", "JWT_SECRET", "KASAL_DATABASE_URL", "KASAL_SECRET_KEY")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Kasal variables and no ``.env`` in the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("KASAL_") or name in ALIASED:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_database_url_and_jwt_secret_are_aliases(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql+asyncpg://db/app")
    clean_env.setenv("JWT_SECRET", "from-jwt-secret")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://db/app"
    assert settings.resolved_database_url() == "postgresql+asyncpg://db/app"
    assert settings.secret_key.get_secret_value() == "from-jwt-secret"


def test_the_kasal_names_win(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql+asyncpg://db/alias")
    clean_env.setenv("KASAL_DATABASE_URL", "postgresql+asyncpg://db/kasal")
    clean_env.setenv("JWT_SECRET", "alias")
    clean_env.setenv("KASAL_SECRET_KEY", "kasal")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://db/kasal"
    assert settings.secret_key.get_secret_value() == "kasal"


def test_field_names_still_work_in_code(clean_env):
    settings = Settings(database_url="sqlite+aiosqlite:///x.db", secret_key="s" * 40)
    assert settings.database_url == "sqlite+aiosqlite:///x.db"
    assert settings.secret_key.get_secret_value() == "s" * 40


def test_a_dot_env_file_is_read_and_the_environment_wins(clean_env, tmp_path):
    (tmp_path / ".env").write_text(
        "KASAL_TASK_QUEUE=from-dotenv\n"
        "JWT_SECRET=dotenv-secret\n"
        "KASAL_DB_POOL_SIZE=7\n"
        "UNRELATED=ignored\n"
    )
    settings = Settings()
    assert settings.task_queue == "from-dotenv"
    assert settings.secret_key.get_secret_value() == "dotenv-secret"
    assert settings.db_pool_size == 7
    clean_env.setenv("KASAL_TASK_QUEUE", "from-env")
    assert Settings().task_queue == "from-env"


async def test_the_pool_size_is_configurable(clean_env):
    clean_env.setenv("KASAL_DB_POOL_SIZE", "23")
    clean_env.setenv("KASAL_DB_MAX_OVERFLOW", "4")
    get_settings.cache_clear()
    # Building an engine opens no connection: no server is needed to read its pool.
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        assert engine.pool.size() == 23  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 4  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
    explicit = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_size=2)
    try:
        assert explicit.pool.size() == 2  # type: ignore[attr-defined]
    finally:
        await explicit.dispose()


async def test_a_sqlite_file_keeps_every_connection_a_burst_opened(clean_env, tmp_path):
    """Each aiosqlite connection is a thread: a burst of sessions must not open and close
    connections (a thread and the pragmas each) every time it comes back."""
    from sqlalchemy import event, text

    clean_env.setenv("KASAL_DB_POOL_SIZE", "3")
    clean_env.setenv("KASAL_DB_MAX_OVERFLOW", "5")
    get_settings.cache_clear()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'burst.db'}")
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))

    async def burst() -> None:
        async def one() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                await asyncio.sleep(0.05)  # all eight held at once

        await asyncio.gather(*(one() for _ in range(8)))

    try:
        await burst()
        assert len(opened) == 8  # as many at once as the settings allow (3 + 5)
        await burst()
        await burst()
        assert len(opened) == 8, "a later burst opened connections again"
    finally:
        await engine.dispose()


def test_the_owner_defaults_to_the_os_user_and_is_overridable(clean_env):
    import getpass

    assert Settings().owner == getpass.getuser()
    clean_env.setenv("KASAL_OWNER", "alice")
    assert Settings().owner == "alice"
