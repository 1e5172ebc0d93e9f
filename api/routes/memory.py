"""A crew's memory: list, search and clear what its executions remembered (and the
knowledge chunks they embedded). Reached through the crew's group (issue 10): viewers read,
editors clear. Memory stays per person: each caller sees what their own runs of the crew
remembered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from api.audit import note
from api.deps import CurrentPrincipal, IdPath, Limit, Offset, SessionDep, StateDep
from api.schemas import Page
from api.services import memory as service
from api.services.access import crew_for
from kasal.access import Role
from kasal.memory import MemoryStore
from kasal.spec import CrewSpec

router = APIRouter(prefix="/crews", tags=["memory"])

Kind = Annotated[
    Literal["memory", "knowledge"] | None,
    Query(description="only task memories, or only knowledge chunks"),
]


class MemoryOut(BaseModel):
    """One remembered thing."""

    id: str
    kind: str
    content: str
    meta: dict[str, Any]
    created_at: datetime | None = None
    #: Similarity to the query (search only).
    score: float | None = None


class MemorySearch(BaseModel):
    """Search results, best first."""

    items: list[MemoryOut]


class MemoryCleared(BaseModel):
    """How many records were forgotten."""

    deleted: int


def _store(state: StateDep) -> MemoryStore:
    return MemoryStore(state.sessions)


@router.get("/{crew_id}/memory", response_model=Page[MemoryOut])
async def list_memory(
    crew_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    kind: Kind = None,
    offset: Offset = 0,
    limit: Limit = 20,
):
    """The crew's memory records, newest first."""
    await crew_for(session, principal, crew_id)  # 404 outside the crew's group
    rows, total = await _store(state).list(
        service.scope_of(crew_id, principal.user_id), kind=kind, limit=limit, offset=offset
    )
    items = [
        MemoryOut(id=r.id, kind=r.kind, content=r.content, meta=r.meta, created_at=r.created_at)
        for r in rows
    ]
    return Page[MemoryOut](items=items, total=total, offset=offset, limit=limit)


@router.get("/{crew_id}/memory/search", response_model=MemorySearch)
async def search_memory(
    crew_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="what to look for")],
    kind: Kind = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
):
    """The records most similar to ``q`` (embedded with the crew's embedder)."""
    crew = await crew_for(session, principal, crew_id)
    spec = CrewSpec.model_validate(crew.spec)
    hits = await service.search(
        state.sessions,
        spec,
        service.scope_of(crew_id, principal.user_id),
        q,
        kind=kind,
        limit=limit,
    )
    return MemorySearch(
        items=[
            MemoryOut(id=h.id, kind=h.kind, content=h.content, meta=h.meta, score=h.score)
            for h in hits
        ]
    )


@router.delete("/{crew_id}/memory", response_model=MemoryCleared)
async def clear_memory(
    crew_id: IdPath,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    kind: Kind = None,
):
    """Forget the caller's memory of the crew (all of it, or one kind; editors and up)."""
    note(http, "crew.memory.clear", "crew", crew_id)
    crew = await crew_for(session, principal, crew_id, Role.EDITOR)
    note(http, "crew.memory.clear", "crew", crew.id, group_id=crew.group_id)
    deleted = await _store(state).clear(service.scope_of(crew_id, principal.user_id), kind=kind)
    return MemoryCleared(deleted=deleted)
