"""A crew's memory: list, search and clear what its executions remembered (and the
knowledge chunks they embedded). Only the crew's owner reaches it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import CurrentUser, IdPath, Limit, Offset, SessionDep, StateDep
from api.schemas import Page
from api.services import memory as service
from kasal.db.repositories import CrewRepository
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
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    kind: Kind = None,
    offset: Offset = 0,
    limit: Limit = 20,
):
    """The crew's memory records, newest first."""
    await CrewRepository(session).get(crew_id, user.id)  # 404 unless the caller's
    rows, total = await _store(state).list(
        service.scope_of(crew_id, user.id), kind=kind, limit=limit, offset=offset
    )
    items = [
        MemoryOut(id=r.id, kind=r.kind, content=r.content, meta=r.meta, created_at=r.created_at)
        for r in rows
    ]
    return Page[MemoryOut](items=items, total=total, offset=offset, limit=limit)


@router.get("/{crew_id}/memory/search", response_model=MemorySearch)
async def search_memory(
    crew_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="what to look for")],
    kind: Kind = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
):
    """The records most similar to ``q`` (embedded with the crew's embedder)."""
    crew = await CrewRepository(session).get(crew_id, user.id)
    spec = CrewSpec.model_validate(crew.spec)
    hits = await service.search(
        state.sessions,
        spec,
        service.scope_of(crew_id, user.id),
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
    crew_id: IdPath, user: CurrentUser, session: SessionDep, state: StateDep, kind: Kind = None
):
    """Forget the crew's memory (all of it, or one kind)."""
    await CrewRepository(session).get(crew_id, user.id)
    deleted = await _store(state).clear(service.scope_of(crew_id, user.id), kind=kind)
    return MemoryCleared(deleted=deleted)
