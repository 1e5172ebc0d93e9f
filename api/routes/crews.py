"""Crews: stored, validated ``CrewSpec``s, each owned by one user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response, status
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.deps import (
    CurrentUser,
    IdPath,
    Limit,
    Offset,
    OptionalTemporalClientDep,
    SessionDep,
    SettingsDep,
)
from api.schemas import CrewOut, Page
from api.services.catalog import check_runnable
from kasal.db.repositories import CrewRepository
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
async def list_crews(user: CurrentUser, session: SessionDep, offset: Offset = 0, limit: Limit = 20):
    """The caller's crews, newest first."""
    items, total = await CrewRepository(session).list(user.id, offset=offset, limit=limit)
    return Page[CrewOut](
        items=[CrewOut.model_validate(c) for c in items], total=total, offset=offset, limit=limit
    )


@router.post("", response_model=CrewOut, status_code=status.HTTP_201_CREATED)
async def create_crew(
    spec: SpecBody,
    user: CurrentUser,
    session: SessionDep,
    client: OptionalTemporalClientDep,
    settings: SettingsDep,
):
    """Store a crew from a CrewSpec."""
    owner_id = user.id
    data = await validated(spec, session, client, settings)
    return await CrewRepository(session).create(owner_id, data)


@router.get("/{crew_id}", response_model=CrewOut)
async def get_crew(crew_id: IdPath, user: CurrentUser, session: SessionDep):
    """One of the caller's crews."""
    return await CrewRepository(session).get(crew_id, user.id)


@router.put("/{crew_id}", response_model=CrewOut)
async def replace_crew(
    crew_id: IdPath,
    spec: SpecBody,
    user: CurrentUser,
    session: SessionDep,
    client: OptionalTemporalClientDep,
    settings: SettingsDep,
):
    """Replace a crew's spec (executions already started keep the spec they started with)."""
    crews = CrewRepository(session)
    crew = await crews.get(crew_id, user.id)
    return await crews.replace(crew, await validated(spec, session, client, settings))


@router.delete("/{crew_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_crew(crew_id: IdPath, user: CurrentUser, session: SessionDep) -> Response:
    """Delete a crew; its executions and their traces stay."""
    crews = CrewRepository(session)
    await crews.delete(await crews.get(crew_id, user.id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
