"""Issue 10's tables on SQLite and PostgreSQL: the audit log is append-only in the database,
personal groups are made once however many requests race, and the migration moves every
existing user's crews, executions, schedules and webhook subscriptions into that user's
personal group."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from kasal.db.engine import create_engine, session_factory
from kasal.db.migrate import migrate
from kasal.db.models import (
    Crew,
    Execution,
    Group,
    GroupMember,
    Schedule,
    User,
    WebhookSubscription,
)
from kasal.db.repositories import UserRepository
from kasal.db.teams import AuditRepository, GroupRepository


async def test_the_audit_log_refuses_updates_and_deletes(sessions):
    async with sessions() as session, session.begin():
        await AuditRepository(session).append(
            action="crew.create", method="POST", path="/api/v1/crews", status_code=201
        )
    for statement in ("UPDATE audit_events SET action = 'forged'", "DELETE FROM audit_events"):
        async with sessions() as session:
            with pytest.raises(Exception, match="append-only"):
                await session.execute(text(statement))
    async with sessions() as session:
        items, total = await AuditRepository(session).page(group_ids=None, offset=0, limit=10)
        assert total == 1 and items[0].action == "crew.create"


async def test_a_personal_group_is_made_once_under_concurrency(sessions):
    async with sessions() as session, session.begin():
        user_id = (await UserRepository(session).create("racer@example.com", "h")).id

    async def ensure() -> str:
        async with sessions() as session, session.begin():
            user = await session.get(User, user_id)
            return await GroupRepository(session).ensure_personal(user)

    made = await asyncio.gather(*(ensure() for _ in range(5)))
    assert len(set(made)) == 1
    async with sessions() as session:
        assert len((await session.scalars(select(Group))).all()) == 1
        roles = await GroupRepository(session).roles_of(user_id)
        assert [(g, r.label) for g, r in roles] == [(made[0], "admin")]


async def test_the_migration_gives_existing_users_their_things_in_a_personal_group(db_url):
    engine = create_engine(db_url)
    try:
        # The last revision before teams: issue 9's schedules and webhooks exist.
        await migrate(engine, "0008_9")
        async with engine.begin() as connection:
            for user in ("u1", "u2"):
                await connection.execute(
                    text(
                        "INSERT INTO users (id, email, hashed_password, is_admin, is_active, "
                        "created_at) VALUES (:id, :email, 'h', false, true, CURRENT_TIMESTAMP)"
                    ),
                    {"id": user.ljust(32, "0"), "email": f"{user}@example.com"},
                )
            await connection.execute(
                text(
                    "INSERT INTO crews (id, owner_id, name, description, spec, created_at, "
                    "updated_at) VALUES (:id, :owner, 'c', '', '{}', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"
                ),
                {"id": "c".ljust(32, "0"), "owner": "u1".ljust(32, "0")},
            )
            await connection.execute(
                text(
                    "INSERT INTO schedules (id, owner_id, name, inputs, created_at, updated_at) "
                    "VALUES (:id, :owner, 's', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": "s".ljust(32, "0"), "owner": "u2".ljust(32, "0")},
            )
            await connection.execute(
                text(
                    "INSERT INTO webhook_subscriptions (id, owner_id, url, secret, events, "
                    "description, active, created_at) VALUES (:id, :owner, 'http://x', 'k', "
                    "'[]', '', true, CURRENT_TIMESTAMP)"
                ),
                {"id": "w".ljust(32, "0"), "owner": "u2".ljust(32, "0")},
            )
        await migrate(engine)
        async with session_factory(engine)() as session:
            members = (await session.scalars(select(GroupMember))).all()
            by_user = {m.user_id: m for m in members}
            assert set(by_user) == {"u1".ljust(32, "0"), "u2".ljust(32, "0")}
            assert {m.role for m in members} == {"admin"}
            crew = await session.get(Crew, "c".ljust(32, "0"))
            assert crew.group_id == by_user["u1".ljust(32, "0")].group_id
            schedule = await session.get(Schedule, "s".ljust(32, "0"))
            assert schedule.group_id == by_user["u2".ljust(32, "0")].group_id
            webhook = await session.get(WebhookSubscription, "w".ljust(32, "0"))
            assert webhook.group_id == by_user["u2".ljust(32, "0")].group_id
            assert (await session.scalars(select(Execution))).all() == []
    finally:
        await engine.dispose()
