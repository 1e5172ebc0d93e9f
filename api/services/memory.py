"""A crew's memory as its owner sees it over REST: list, search, clear."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kasal.embedders import build_embedder, embedder_spec
from kasal.memory import Hit, MemoryScope, MemoryStore
from kasal.spec import CrewSpec


def scope_of(crew_id: str, owner_id: str) -> MemoryScope:
    """The memory scope of a stored crew run by its owner through the API."""
    return MemoryScope.of(crew_id, "", owner_id)


async def search(
    sessions: async_sessionmaker[AsyncSession],
    spec: CrewSpec,
    scope: MemoryScope,
    query: str,
    *,
    kind: str | None,
    limit: int,
) -> list[Hit]:
    """The records most like ``query``, embedded with the crew's own embedder."""
    embedder = embedder_spec(spec.embedder)
    vector = (await asyncio.to_thread(build_embedder(embedder), [query]))[0]
    kinds = (kind,) if kind else ("memory", "knowledge")
    return await MemoryStore(sessions).search(
        scope, vector, embedder.model, kinds=kinds, limit=limit
    )
