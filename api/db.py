"""Applying the Alembic migrations and seeding the first admin, at API start."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.security import hash_password
from kasal.db.repositories import UserRepository
from kasal.settings import Settings

log = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config() -> Config:
    """The Alembic configuration shipped with the API package."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.with_name("migrations")))
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` on the engine's own connection."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


async def ensure_admin(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Create the first admin from KASAL_ADMIN_EMAIL / KASAL_ADMIN_PASSWORD if missing.

    An existing account is left alone: the environment seeds, it never resets a password.
    """
    email = settings.admin_email.strip()
    password = settings.admin_password.get_secret_value()
    if not email or not password:
        log.info("no KASAL_ADMIN_EMAIL/KASAL_ADMIN_PASSWORD: no admin account seeded")
        return
    async with sessions() as session, session.begin():
        users = UserRepository(session)
        if await users.get_by_email(email) is None:
            await users.create(email, hash_password(password), is_admin=True)
            log.info("created the admin account %s", email)
