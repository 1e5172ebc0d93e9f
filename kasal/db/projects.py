"""The CrewAI projects workers serve, as the API sees them (``GET /api/v1/projects``).

A worker started with ``kasal worker --project DIR`` builds each project's crew with the
project's own code and publishes it here as spec data (agents, tasks, fields, the inputs of
its ``main.py``): the API, which imports no CrewAI, lists projects and starts their crews
by name from this row; the workers run them from the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from kasal.db.models import Base, utcnow
from kasal.db.repositories import _insert_for
from kasal.exceptions import NotFoundError


class WorkerProject(Base):
    """One CrewAI project served on one task queue: its crew as spec data."""

    __tablename__ = "worker_projects"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_queue: Mapped[str] = mapped_column(String(255), primary_key=True)
    identity: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    default_inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectRepository:
    """Projects published by workers, per name and task queue."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def publish(
        self,
        name: str,
        task_queue: str,
        identity: str,
        spec: dict[str, Any],
        default_inputs: dict[str, Any],
    ) -> None:
        """Insert or replace the project ``name`` on ``task_queue``."""
        now = utcnow()
        values = {
            "identity": identity,
            "spec": spec,
            "default_inputs": default_inputs,
            "published_at": now,
        }
        statement = _insert_for(self.session)(WorkerProject).values(
            name=name, task_queue=task_queue, **values
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[WorkerProject.name, WorkerProject.task_queue], set_=values
            )
        )

    async def for_queue(self, task_queue: str) -> Sequence[WorkerProject]:
        """Every project served on ``task_queue``, by name."""
        query = (
            select(WorkerProject)
            .where(WorkerProject.task_queue == task_queue)
            .order_by(WorkerProject.name)
        )
        return (await self.session.scalars(query)).all()

    async def get(self, name: str, task_queue: str) -> WorkerProject:
        """The project ``name`` on ``task_queue``; NotFoundError if no worker serves it."""
        row = await self.session.get(WorkerProject, (name, task_queue))
        if row is None:
            raise NotFoundError(
                f"no worker serves a CrewAI project called {name!r} on this task queue "
                "(start one with `kasal worker --project DIR`)",
                field="project",
            )
        return row
