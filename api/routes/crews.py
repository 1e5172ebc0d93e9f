"""Crews: stored, validated ``CrewSpec``s, shared within their group (editors change them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.audit import note
from api.deps import (
    CurrentPrincipal,
    IdPath,
    Limit,
    Offset,
    OptionalTemporalClientDep,
    SessionDep,
    SettingsDep,
)
from api.schemas import CrewOut, Page
from api.services.access import crew_for, group_for_new
from api.services.catalog import check_runnable
from kasal.access import Role
from kasal.db.repositories import CrewRepository
from kasal.db.teams import SharedRows
from kasal.settings import Settings
from kasal.spec import CrewSpec

router = APIRouter(prefix="/crews", tags=["crews"])

EXAMPLE_SPEC: dict[str, Any] = {
    "name": "research",
    "agents": [
        {
            "name": "analyst",
            "role": "Analyst",
            "goal": "Summarise {topic}",
            "llm": {"model": "offline/analyst"},
        }
    ],
    "tasks": [
        {
            "name": "summary",
            "description": "Summarise {topic} in three bullet points",
            "expected_output": "Three bullet points",
            "agent": "analyst",
        }
    ],
    "inputs": {"topic": "durable execution"},
}

SpecBody = Annotated[
    dict[str, Any],
    Body(description="a CrewSpec (agents, tasks, process, ...)", examples=[EXAMPLE_SPEC]),
]


async def validated(
    data: dict[str, Any], session: AsyncSession, client: Client | None, settings: Settings
) -> dict[str, Any]:
    """The spec as it will be stored: validated (422 with details otherwise), checked
    against the workers' catalog (422 naming any unknown tool, provider or endpoint),
    normalised."""
    spec = CrewSpec.from_data(data)
    await check_runnable(
        session,
        client,
        spec,
        task_queue=settings.task_queue,
        base_urls=settings.llm_base_urls,
    )
    return spec.model_dump(mode="json")


@router.get("", response_model=Page[CrewOut])
async def list_crews(
    principal: CurrentPrincipal, session: SessionDep, offset: Offset = 0, limit: Limit = 20
):
    """The crews of the caller's groups, newest first."""
    items, total = await SharedRows(session).crews(
        principal.visible_groups(),
        None if principal.key_id else principal.user_id,
        offset=offset,
        limit=limit,
    )
    return Page[CrewOut](
        items=[CrewOut.model_validate(c) for c in items], total=total, offset=offset, limit=limit
    )


@router.post("", response_model=CrewOut, status_code=status.HTTP_201_CREATED)
async def create_crew(
    spec: SpecBody,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: OptionalTemporalClientDep,
    settings: SettingsDep,
):
    """Store a crew from a CrewSpec in the caller's current group (editors and admins)."""
    note(request, "crew.create", "crew")  # refused attempts are audited under this name too
    group_id = group_for_new(principal, Role.EDITOR)
    data = await validated(spec, session, client, settings)
    crew = await CrewRepository(session).create(principal.user_id, data)
    crew.group_id = group_id
    await session.flush()
    note(request, "crew.create", "crew", crew.id, group_id=group_id, after={"crew_id": crew.id})
    return crew


@router.get("/{crew_id}", response_model=CrewOut)
async def get_crew(crew_id: IdPath, principal: CurrentPrincipal, session: SessionDep):
    """One crew of the caller's groups."""
    return await crew_for(session, principal, crew_id)


@router.put("/{crew_id}", response_model=CrewOut)
async def replace_crew(
    crew_id: IdPath,
    spec: SpecBody,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    client: OptionalTemporalClientDep,
    settings: SettingsDep,
):
    """Replace a crew's spec (executions already started keep the spec they started with)."""
    note(request, "crew.replace", "crew", crew_id)
    crew = await crew_for(session, principal, crew_id, Role.EDITOR)
    before = {"name": crew.name, "updated_at": crew.updated_at.isoformat()}
    crew = await CrewRepository(session).replace(
        crew, await validated(spec, session, client, settings)
    )
    note(
        request,
        "crew.replace",
        "crew",
        crew.id,
        group_id=crew.group_id,
        before=before,
        after={"name": crew.name, "updated_at": crew.updated_at.isoformat()},
    )
    return crew


@router.delete("/{crew_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_crew(
    crew_id: IdPath, request: Request, principal: CurrentPrincipal, session: SessionDep
) -> Response:
    """Delete a crew; its executions and their traces stay."""
    note(request, "crew.delete", "crew", crew_id)
    crew = await crew_for(session, principal, crew_id, Role.EDITOR)
    note(
        request, "crew.delete", "crew", crew.id, group_id=crew.group_id, before={"crew_id": crew.id}
    )
    await CrewRepository(session).delete(crew)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
