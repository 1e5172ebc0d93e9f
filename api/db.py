"""Database set-up at API start: migrations (``kasal.db.migrate``) and the first admin."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.security import hash_password
from kasal.db.migrate import migrate
from kasal.db.repositories import UserRepository
from kasal.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ensure_admin", "migrate"]


async def ensure_admin(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Create the first admin from KASAL_ADMIN_EMAIL / KASAL_ADMIN_PASSWORD if missing.

    An existing account is left alone: the environment seeds, it never resets a password.
    Safe for any number of API processes starting at once on one database.
    """
    email = settings.admin_email.strip()
    password = settings.admin_password.get_secret_value()
    if not email or not password:
        log.info("no KASAL_ADMIN_EMAIL/KASAL_ADMIN_PASSWORD: no admin account seeded")
        return
    async with sessions() as session, session.begin():
        users = UserRepository(session)
        if await users.get_by_email(email) is not None:
            return  # the common case; skips hashing, which is slow on purpose
        # Replicas started together all see no admin here: only one insert may win, and the
        # others must carry on, not die on the unique email.
        if await users.create_if_absent(email, hash_password(password), is_admin=True):
            log.info("created the admin account %s", email)
