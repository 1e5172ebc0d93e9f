"""CrewAI projects the workers serve (``kasal worker --project DIR``): list, describe.

Start one with ``POST /api/v1/executions`` and ``{"project": "<name>", "inputs": {...}}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import CurrentPrincipal, SessionDep, StateDep
from api.schemas import ProjectOut
from kasal.db.projects import ProjectRepository, WorkerProject
from kasal.spec import CrewSpec

router = APIRouter(prefix="/projects", tags=["projects"])

NamePath = Annotated[str, Path(max_length=200)]


def _out(row: WorkerProject) -> ProjectOut:
    spec = CrewSpec.from_data(row.spec)
    return ProjectOut(
        name=row.name,
        crew_name=spec.name,
        task_queue=row.task_queue,
        agents=[a.name for a in spec.agents],
        tasks=[t.name for t in spec.tasks],
        placeholders=sorted(spec.placeholders()),
        default_inputs=row.default_inputs,
        planning=spec.planning,
        process=spec.process,
        published_at=row.published_at,
    )


@router.get("", response_model=list[ProjectOut])
async def list_projects(
    principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> list[ProjectOut]:
    """The CrewAI projects served on this deployment's task queue."""
    rows = await ProjectRepository(session).for_queue(state.settings.task_queue)
    return [_out(row) for row in rows]


@router.get("/{name}", response_model=ProjectOut)
async def get_project(
    name: NamePath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> ProjectOut:
    """One served project: its agents, tasks, placeholders and default inputs."""
    return _out(await ProjectRepository(session).get(name, state.settings.task_queue))
