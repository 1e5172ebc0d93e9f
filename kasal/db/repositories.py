"""Every query the API and the worker make, one repository per table.

Repositories never commit: the caller owns the transaction (the API commits once per
request; the record activity commits once per attempt). Ownership is part of every lookup,
so another user's row is simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from kasal.db.models import Crew, Execution, TraceEvent, User, WorkerCatalog, new_id, utcnow
from kasal.exceptions import NotFoundError
from kasal.execution import CrewWorkflowResult, Event, ExecutionState, ExecutionStatus

FINISHED = tuple(s.value for s in ExecutionState if s.finished)


def _insert_for(session: AsyncSession) -> Any:
    """The dialect's own ``insert`` (the one with ``on_conflict_do_nothing``)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return postgresql.insert
    if bind.dialect.name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"no upsert for the {bind.dialect.name} dialect")


class UserRepository:
    """Users, looked up by id or email."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        """The user with this id, if any."""
        return await self.session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        """The user with this email (compared case-insensitively), if any."""
        query = select(User).where(User.email == email.strip().lower())
        return (await self.session.scalars(query)).first()

    async def create(
        self,
        email: str,
        hashed_password: str,
        *,
        is_admin: bool = False,
        full_name: str | None = None,
    ) -> User:
        """A new user; the email is stored lower-cased."""
        user = User(
            email=email.strip().lower(),
            hashed_password=hashed_password,
            is_admin=is_admin,
            full_name=full_name,
            is_active=True,
        )
        self.session.add(user)
        await self.session.flush()
        return user

    async def create_if_absent(
        self, email: str, hashed_password: str, *, is_admin: bool = False
    ) -> bool:
        """Insert a user unless one with this email exists; True if this call inserted it.

        One statement (``INSERT ... ON CONFLICT DO NOTHING``), so any number of processes
        may seed the same account at once: the losers insert nothing and fail nothing, and
        the caller's transaction stays usable.
        """
        values = {
            "id": new_id(),
            "email": email.strip().lower(),
            "hashed_password": hashed_password,
            "is_admin": is_admin,
            "is_active": True,
            "created_at": utcnow(),
        }
        statement = _insert_for(self.session)(User).values(**values)
        result = await self.session.execute(
            statement.on_conflict_do_nothing(index_elements=[User.email])
        )
        return bool(getattr(result, "rowcount", 0))


class CrewRepository:
    """Crews of one owner."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, owner_id: str, spec: dict[str, Any]) -> Crew:
        """Store a validated spec (as JSON data) as a new crew."""
        crew = Crew(
            owner_id=owner_id,
            name=spec["name"],
            description=spec.get("description") or "",
            spec=spec,
        )
        self.session.add(crew)
        await self.session.flush()
        return crew

    async def get(self, crew_id: str, owner_id: str) -> Crew:
        """The owner's crew, or :class:`NotFoundError`."""
        query = select(Crew).where(Crew.id == crew_id, Crew.owner_id == owner_id)
        crew = (await self.session.scalars(query)).first()
        if crew is None:
            raise NotFoundError(f"crew {crew_id} not found")
        return crew

    async def list(self, owner_id: str, *, offset: int, limit: int) -> tuple[Sequence[Crew], int]:
        """A page of the owner's crews, newest first, and how many there are."""
        where = Crew.owner_id == owner_id
        total = await self.session.scalar(select(func.count()).select_from(Crew).where(where))
        query = (
            select(Crew)
            .where(where)
            .order_by(Crew.created_at.desc(), Crew.id)
            .offset(offset)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all(), int(total or 0)

    async def replace(self, crew: Crew, spec: dict[str, Any]) -> Crew:
        """Replace a crew's spec."""
        crew.spec = spec
        crew.name = spec["name"]
        crew.description = spec.get("description") or ""
        crew.updated_at = utcnow()
        await self.session.flush()
        return crew

    async def delete(self, crew: Crew) -> None:
        """Delete a crew (its executions stay)."""
        await self.session.delete(crew)
        await self.session.flush()


@dataclass(frozen=True)
class ExecutionFilter:
    """Filters of execution lists beyond owner, status and crew."""

    schedule_id: str | None = None
    #: Created at or after / before these times.
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: Text the crew name contains (case-insensitive).
    text: str | None = None


def _where(
    owner_id: str | None, status: str | None, crew_id: str | None, f: ExecutionFilter | None
) -> list[Any]:
    where: list[Any] = []
    if owner_id is not None:
        where.append(Execution.owner_id == owner_id)
    if status is not None:
        where.append(Execution.status == status)
    if crew_id is not None:
        where.append(Execution.crew_id == crew_id)
    if f is not None:
        if f.schedule_id is not None:
            where.append(Execution.schedule_id == f.schedule_id)
        if f.created_after is not None:
            where.append(Execution.created_at >= f.created_after)
        if f.created_before is not None:
            where.append(Execution.created_at < f.created_before)
        if f.text:
            escaped = f.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(Execution.crew_name.ilike(f"%{escaped}%", escape="\\"))
    return where


class ExecutionRepository:
    """Executions: created by the API, finished by the record activity."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, execution: Execution) -> Execution:
        """Insert a new execution row (the caller has filled it in)."""
        self.session.add(execution)
        await self.session.flush()
        return execution

    async def get(self, execution_id: str, owner_id: str) -> Execution:
        """The owner's execution, or :class:`NotFoundError`."""
        query = select(Execution).where(
            Execution.id == execution_id, Execution.owner_id == owner_id
        )
        execution = (await self.session.scalars(query)).first()
        if execution is None:
            raise NotFoundError(f"execution {execution_id} not found")
        return execution

    async def get_by_idempotency_key(self, owner_id: str, key: str) -> Execution | None:
        """The owner's execution started with this ``Idempotency-Key``, if any."""
        query = select(Execution).where(
            Execution.owner_id == owner_id, Execution.idempotency_key == key
        )
        return (await self.session.scalars(query)).first()

    async def delete(self, execution: Execution) -> None:
        """Remove an execution that never started."""
        await self.session.delete(execution)
        await self.session.flush()

    async def note_live_status(
        self, execution_id: str, state: str, started_at: datetime | None
    ) -> None:
        """Keep a running execution's row in step with the workflow, never un-finishing it.

        The record activity writes the final state; a status read racing it must not
        overwrite that with an older live state, hence the condition in the statement.
        """
        if state in FINISHED:
            return
        await self.session.execute(
            update(Execution)
            .where(
                Execution.id == execution_id,
                Execution.status.not_in(FINISHED),
                Execution.status != state,
            )
            .values(status=state, started_at=started_at)
            .execution_options(synchronize_session=False)
        )

    async def record_finished(
        self,
        *,
        workflow_id: str,
        status: ExecutionStatus,
        result: CrewWorkflowResult | None,
        events: Sequence[Event],
        owner: str | None = None,
    ) -> Execution:
        """Upsert an execution's final state and replace its trace: safe to repeat.

        Executions started outside the API (CLI, Python facade) have no row yet; one is
        made, owned by ``owner`` if that names a user.
        """
        execution = await self.session.get(Execution, status.execution_id)
        if execution is None:
            known = owner is not None and await self.session.get(User, owner) is not None
            owner_id = owner if known else None
            execution = Execution(
                id=status.execution_id,
                workflow_id=workflow_id,
                owner_id=owner_id,
                crew_id=status.crew_id,
                crew_name=status.crew_name,
                spec={},
                inputs={},
                created_at=status.started_at or utcnow(),
                replay_of=status.replay_of,
                replay_from_task=status.replay_from_task,
            )
            self.session.add(execution)
        execution.status = status.state.value
        execution.started_at = status.started_at
        execution.ended_at = status.ended_at
        execution.token_usage = status.token_usage.model_dump()
        execution.status_detail = status.model_dump(mode="json")
        execution.result = result.model_dump(mode="json") if result is not None else None
        execution.error = status.error
        execution.event_count = len(events)
        await self.session.flush()
        await self.session.execute(
            delete(TraceEvent).where(TraceEvent.execution_id == execution.id)
        )
        rows = [
            {
                "execution_id": execution.id,
                "offset": event.offset if event.offset is not None else index,
                "type": str(event.type),
                "timestamp": event.timestamp,
                "task": event.task,
                "agent": event.agent,
                "attempt": event.attempt,
                "event_id": event.event_id,
                "data": event.data,
                "history_event_id": event.history_event_id,
            }
            for index, event in enumerate(events)
        ]
        for start in range(0, len(rows), 500):
            await self.session.execute(insert(TraceEvent), rows[start : start + 500])
        return execution


class WorkerCatalogRepository:
    """The tool catalogs workers publish, per worker identity and task queue."""

    #: Rows older than this are dropped whenever a worker publishes, so every restart's new
    #: identity does not pile up for ever. Rows are written only at worker start, hence the
    #: generous limit: a worker running longer than this without a restart loses its row.
    RETENTION = timedelta(days=30)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def publish(self, identity: str, task_queue: str, tools: list[str]) -> None:
        """Insert or replace this worker's catalog for ``task_queue``."""
        now = utcnow()
        statement = _insert_for(self.session)(WorkerCatalog).values(
            identity=identity, task_queue=task_queue, tools=tools, published_at=now
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[WorkerCatalog.identity, WorkerCatalog.task_queue],
                set_={"tools": tools, "published_at": now},
            )
        )
        await self.session.execute(
            delete(WorkerCatalog).where(WorkerCatalog.published_at < now - self.RETENTION)
        )

    async def for_queue(self, task_queue: str) -> Sequence[WorkerCatalog]:
        """Every catalog published for ``task_queue``, newest first."""
        query = (
            select(WorkerCatalog)
            .where(WorkerCatalog.task_queue == task_queue)
            .order_by(WorkerCatalog.published_at.desc())
        )
        return (await self.session.scalars(query)).all()


class TraceRepository:
    """The stored events of finished executions."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, execution_id: str, *, offset: int, limit: int) -> list[Event]:
        """Events from ``offset`` on, in order, at most ``limit``."""
        query = (
            select(TraceEvent)
            .where(TraceEvent.execution_id == execution_id, TraceEvent.offset >= offset)
            .order_by(TraceEvent.offset)
            .limit(limit)
        )
        return [to_event(row) for row in (await self.session.scalars(query)).all()]


def to_event(row: TraceEvent) -> Event:
    """A stored row as the :class:`Event` the workflow emitted."""
    return Event(
        type=row.type,  # type: ignore[arg-type]
        timestamp=row.timestamp,
        task=row.task,
        agent=row.agent,
        attempt=row.attempt,
        data=row.data or {},
        event_id=row.event_id,
        offset=row.offset,
        history_event_id=row.history_event_id,
    )
