"""Repositories on SQLite and PostgreSQL: queries, ownership, idempotent records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from kasal.db.engine import create_engine
from kasal.db.migrate import migrate
from kasal.db.models import Execution, TraceEvent, User
from kasal.db.repositories import (
    CrewRepository,
    ExecutionRepository,
    TraceRepository,
    UserRepository,
)
from kasal.db.teams import SharedRows
from kasal.exceptions import NotFoundError
from kasal.execution import (
    CrewWorkflowResult,
    Event,
    EventType,
    ExecutionState,
    ExecutionStatus,
    TaskOutput,
    TaskState,
    TaskStatus,
    TokenUsage,
)

SPEC = {"name": "crew", "description": "d", "agents": [], "tasks": [{"name": "t", "agent": "a"}]}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def make_user(sessions, email: str) -> str:
    async with sessions() as session, session.begin():
        return (await UserRepository(session).create(email, "hash")).id


def new_execution(owner: str, execution_id: str, **values) -> Execution:
    return Execution(
        id=execution_id,
        workflow_id=f"kasal-exec-{execution_id}",
        owner_id=owner,
        crew_name="crew",
        spec=SPEC,
        inputs={},
        **values,
    )


def final_status(execution_id: str, state=ExecutionState.COMPLETED) -> ExecutionStatus:
    return ExecutionStatus(
        execution_id=execution_id,
        crew_name="crew",
        state=state,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=3),
        tasks=[TaskStatus(name="t", agent="a", state=TaskState.COMPLETED, attempts=1)],
        token_usage=TokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15, requests=1),
        event_count=3,
    )


def events(count: int) -> list[Event]:
    return [
        Event(
            type=EventType.LLM_CALL,
            timestamp=T0 + timedelta(seconds=i),
            task="t",
            agent="a",
            attempt=1,
            data={"i": i, "text": "ünïcode ✓"},
            event_id=f"e{i}",
            offset=i,
        )
        for i in range(count)
    ]


async def test_migrations_are_idempotent(db_url, sessions):
    engine = create_engine(db_url)
    try:
        await migrate(engine)  # a second API process starting finds the schema current
    finally:
        await engine.dispose()


async def test_users(sessions):
    user_id = await make_user(sessions, "Ann@Example.com")
    async with sessions() as session:
        users = UserRepository(session)
        assert (await users.get_by_email("ann@example.COM")).id == user_id
        assert (await users.get(user_id)).email == "ann@example.com"
        assert await users.get("0" * 32) is None
    with pytest.raises(IntegrityError):
        await make_user(sessions, "ann@example.com")


async def test_crews_are_owned(sessions):
    ann = await make_user(sessions, "ann@example.com")
    ben = await make_user(sessions, "ben@example.com")
    async with sessions() as session, session.begin():
        crews = CrewRepository(session)
        ids = [(await crews.create(ann, {**SPEC, "name": f"c{i}"})).id for i in range(3)]
    async with sessions() as session, session.begin():
        crews = CrewRepository(session)
        page, total = await crews.list(ann, offset=0, limit=2)
        assert total == 3 and len(page) == 2
        assert (await crews.list(ben, offset=0, limit=10))[1] == 0
        with pytest.raises(NotFoundError):
            await crews.get(ids[0], ben)
        crew = await crews.get(ids[0], ann)
        await crews.replace(crew, {**SPEC, "name": "renamed"})
    async with sessions() as session, session.begin():
        crews = CrewRepository(session)
        crew = await crews.get(ids[0], ann)
        assert crew.name == "renamed" and crew.spec["name"] == "renamed"
        assert crew.updated_at >= crew.created_at and crew.created_at.tzinfo is not None
        await crews.delete(crew)
    async with sessions() as session:
        assert (await CrewRepository(session).list(ann, offset=0, limit=10))[1] == 2


async def test_executions_list_filters_and_idempotency(sessions):
    ann = await make_user(sessions, "ann@example.com")
    ben = await make_user(sessions, "ben@example.com")
    async with sessions() as session, session.begin():
        repo = ExecutionRepository(session)
        for i in range(4):
            await repo.create(
                new_execution(
                    ann,
                    f"{i:032x}",
                    crew_id="c" * 32 if i % 2 else None,
                    status="completed" if i < 2 else "running",
                    idempotency_key=f"k{i}",
                    created_at=T0 + timedelta(minutes=i),
                )
            )
    async with sessions() as session:
        repo = ExecutionRepository(session)
        rows = SharedRows(session)  # rows of no group: the owner's own
        items, total = await rows.executions([], ann, offset=0, limit=10)
        assert total == 4 and [e.id for e in items] == [f"{i:032x}" for i in (3, 2, 1, 0)]
        assert (await rows.executions([], ann, status="running", offset=0, limit=10))[1] == 2
        crew_items, _ = await rows.executions(
            [], ann, crew_id="c" * 32, status="completed", offset=0, limit=10
        )
        assert [e.id for e in crew_items] == [f"{1:032x}"]
        assert (await rows.executions([], ben, offset=0, limit=10))[1] == 0
        assert (await repo.get_by_idempotency_key(ann, "k2")).id == f"{2:032x}"
        assert await repo.get_by_idempotency_key(ben, "k2") is None
        with pytest.raises(NotFoundError):
            await repo.get(f"{0:032x}", ben)
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await ExecutionRepository(session).create(
                new_execution(ann, "f" * 32, idempotency_key="k1")
            )
    async with sessions() as session, session.begin():  # keys are per owner
        await ExecutionRepository(session).create(
            new_execution(ben, "e" * 32, idempotency_key="k1")
        )


async def test_live_status_never_unfinishes(sessions):
    ann = await make_user(sessions, "ann@example.com")
    async with sessions() as session, session.begin():
        await ExecutionRepository(session).create(new_execution(ann, "a" * 32))
        await ExecutionRepository(session).create(new_execution(ann, "b" * 32, status="completed"))
    async with sessions() as session, session.begin():
        repo = ExecutionRepository(session)
        await repo.note_live_status("a" * 32, "running", T0)
        await repo.note_live_status("b" * 32, "running", T0)
    async with sessions() as session:
        repo = ExecutionRepository(session)
        running = await repo.get("a" * 32, ann)
        assert running.status == "running" and running.started_at == T0
        assert (await repo.get("b" * 32, ann)).status == "completed"


async def test_record_finished_is_idempotent(sessions):
    ann = await make_user(sessions, "ann@example.com")
    execution_id = "c" * 32
    async with sessions() as session, session.begin():
        await ExecutionRepository(session).create(new_execution(ann, execution_id))
    result = CrewWorkflowResult(
        execution_id=execution_id,
        output="done",
        tasks=[TaskOutput(name="t", agent="a", raw="done", attempts=1)],
        token_usage=TokenUsage(total_tokens=15),
    )
    for _ in range(3):  # the activity is retried: every attempt leaves the same rows
        async with sessions() as session, session.begin():
            await ExecutionRepository(session).record_finished(
                workflow_id=f"kasal-exec-{execution_id}",
                status=final_status(execution_id),
                result=result,
                events=events(3),
                owner=ann,
            )
    async with sessions() as session:
        row = await ExecutionRepository(session).get(execution_id, ann)
        assert row.status == "completed" and row.result["output"] == "done"
        assert row.token_usage["total_tokens"] == 15 and row.event_count == 3
        assert row.ended_at - row.started_at == timedelta(seconds=3)
        assert ExecutionStatus.model_validate(row.status_detail).tasks[0].state == "completed"
        count = await session.scalar(select(func.count()).select_from(TraceEvent))
        assert count == 3
        page = await TraceRepository(session).page(execution_id, offset=1, limit=5)
        assert [e.offset for e in page] == [1, 2]
        assert page[0].data == {"i": 1, "text": "ünïcode ✓"} and page[0].timestamp.tzinfo


async def test_record_of_an_execution_started_elsewhere(sessions):
    ann = await make_user(sessions, "ann@example.com")
    async with sessions() as session, session.begin():
        repo = ExecutionRepository(session)
        await repo.record_finished(
            workflow_id="kasal-exec-" + "d" * 32,
            status=final_status("d" * 32, ExecutionState.FAILED),
            result=None,
            events=events(2),
            owner="someone-not-a-user",
        )
        await repo.record_finished(
            workflow_id="kasal-exec-" + "e" * 32,
            status=final_status("e" * 32),
            result=None,
            events=[],
            owner=ann,
        )
    async with sessions() as session:
        orphan = await session.get(Execution, "d" * 32)
        assert orphan.owner_id is None and orphan.status == "failed" and orphan.result is None
        assert (await ExecutionRepository(session).get("e" * 32, ann)).event_count == 0


async def test_create_if_absent_lets_concurrent_seeders_all_succeed(sessions):
    """Replicas seeding one admin at once: exactly one inserts, none fails (issue 11, item 8)."""
    import asyncio

    async def seed() -> bool:
        async with sessions() as session, session.begin():
            return await UserRepository(session).create_if_absent(
                "Admin@Example.com", "hash", is_admin=True
            )

    outcomes = await asyncio.gather(*(seed() for _ in range(8)))
    assert sorted(outcomes) == [False] * 7 + [True]
    async with sessions() as session:
        user = await UserRepository(session).get_by_email("admin@example.com")
        assert user is not None and user.is_admin
        count = await session.scalar(select(func.count()).select_from(User))
    assert count == 1
