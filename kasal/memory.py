"""A crew's memory and knowledge, durable in the app database and shared by all workers.

Records are scoped by crew (its id, or ``name:<crew name>`` for crews run without one)
and owner: one user's runs never recall another's. Each write carries a ``write_key``
(execution, task and step for a task's memory; content hash and chunk for knowledge)
unique within the scope, so a retried or replayed task never writes twice.

Similarity search: on PostgreSQL where the pgvector extension is installed, the migration
adds a ``vector`` column and search orders by cosine distance in SQL; everywhere else
(SQLite, PostgreSQL without pgvector) embeddings are JSON and the newest
:data:`SCAN_LIMIT` candidates of the scope are compared in Python: the plain-SQL path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kasal.db.models import MemoryRecord

#: How many of a scope's newest records the plain-SQL path compares per search.
SCAN_LIMIT = 20_000
#: How many embeddings one process keeps in memory for the plain-SQL path.
VECTOR_CACHE = 200_000


@dataclass(frozen=True)
class MemoryScope:
    """Whose memory: one crew, one owner."""

    crew_key: str
    owner: str = ""

    @classmethod
    def of(cls, crew_id: str | None, crew_name: str, owner: str | None) -> MemoryScope:
        """The scope of a crew (by id, else by name) run by ``owner``."""
        return cls(crew_id or f"name:{crew_name}", owner or "")


@dataclass
class Hit:
    """One search result."""

    id: str
    kind: str
    content: str
    meta: dict[str, Any]
    score: float


class MemoryStore:
    """Reads and writes memory records."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._pgvector: bool | None = None
        #: Normalised embeddings (and knowledge source) by record id: records never change.
        self._vectors: dict[str, tuple[Any, str | None]] = {}

    async def _has_pgvector(self, session: AsyncSession) -> bool:
        if self._pgvector is None:
            if session.get_bind().dialect.name != "postgresql":
                self._pgvector = False
            else:
                found = await session.scalar(
                    text(
                        "SELECT 1 FROM information_schema.columns WHERE table_name = "
                        "'memory_records' AND column_name = 'embedding_vector'"
                    )
                )
                self._pgvector = bool(found)
        return self._pgvector

    async def add(
        self,
        scope: MemoryScope,
        *,
        kind: str,
        write_key: str,
        content: str,
        embedder: str,
        embedding: list[float],
        meta: dict[str, Any] | None = None,
    ) -> bool:
        """Store one record; False if the scope already has ``write_key`` (nothing written)."""
        record = MemoryRecord(
            crew_key=scope.crew_key,
            owner=scope.owner,
            kind=kind,
            write_key=write_key,
            content=content,
            meta=meta or {},
            embedder=embedder,
            embedding=embedding,
        )
        try:
            async with self.sessions() as session, session.begin():
                session.add(record)
                await session.flush()
                if await self._has_pgvector(session):
                    await session.execute(
                        text(
                            "UPDATE memory_records SET embedding_vector = CAST(:v AS vector) "
                            "WHERE id = :id"
                        ),
                        {"v": json.dumps(embedding), "id": record.id},
                    )
        except IntegrityError:
            return False  # the same write again: a retried or replayed task
        return True

    async def existing_keys(self, scope: MemoryScope, keys: list[str]) -> set[str]:
        """Which of ``keys`` the scope already holds."""
        if not keys:
            return set()
        async with self.sessions() as session:
            found = await session.scalars(
                select(MemoryRecord.write_key).where(
                    MemoryRecord.crew_key == scope.crew_key,
                    MemoryRecord.owner == scope.owner,
                    MemoryRecord.write_key.in_(keys),
                )
            )
            return set(found)

    async def search(
        self,
        scope: MemoryScope,
        embedding: list[float],
        embedder: str,
        *,
        kinds: tuple[str, ...] = ("memory",),
        limit: int = 3,
        sources: set[str] | None = None,
    ) -> list[Hit]:
        """The ``limit`` records most similar to ``embedding`` (same embedder only);
        ``sources`` keeps knowledge chunks of those source hashes only."""
        async with self.sessions() as session:
            scoped = select(MemoryRecord).where(
                MemoryRecord.crew_key == scope.crew_key,
                MemoryRecord.owner == scope.owner,
                MemoryRecord.kind.in_(kinds),
                MemoryRecord.embedder == embedder,
            )
            if await self._has_pgvector(session) and sources is None:
                rows = await session.execute(
                    text(
                        "SELECT id, 1 - (embedding_vector <=> CAST(:v AS vector)) AS score "
                        "FROM memory_records WHERE crew_key = :c AND owner = :o "
                        "AND embedder = :e AND kind = ANY(:k) "
                        "ORDER BY embedding_vector <=> CAST(:v AS vector) LIMIT :n"
                    ),
                    {
                        "v": json.dumps(embedding),
                        "c": scope.crew_key,
                        "o": scope.owner,
                        "e": embedder,
                        "k": list(kinds),
                        "n": limit,
                    },
                )
                scores = {row.id: float(row.score) for row in rows}
                records = await session.scalars(
                    select(MemoryRecord).where(MemoryRecord.id.in_(list(scores)))
                )
                hits = [_hit(r, scores[r.id]) for r in records]
            else:
                hits = await self._scan(session, scoped, embedding, limit, sources)
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:limit]

    async def _scan(
        self,
        session: AsyncSession,
        scoped: Any,
        embedding: list[float],
        limit: int,
        sources: set[str] | None,
    ) -> list[Hit]:
        """The plain-SQL path: the scope's newest record ids from SQL, their embeddings
        from this process's cache (records never change; only new ones are read), one
        matrix product, then the best records' contents."""
        ids = list(
            await session.scalars(
                scoped.with_only_columns(MemoryRecord.id)
                .order_by(MemoryRecord.created_at.desc())
                .limit(SCAN_LIMIT)
            )
        )
        missing = [i for i in ids if i not in self._vectors]
        for start in range(0, len(missing), 500):
            rows = await session.execute(
                select(MemoryRecord.id, MemoryRecord.embedding, MemoryRecord.meta).where(
                    MemoryRecord.id.in_(missing[start : start + 500])
                )
            )
            for row in rows:
                vector = np.asarray(row.embedding, dtype=np.float32)
                norm = float(np.linalg.norm(vector)) or 1.0
                self._remember_vector(row.id, vector / norm, (row.meta or {}).get("source"))
        candidates = [i for i in ids if sources is None or self._vectors[i][1] in sources]
        if not candidates:
            return []
        matrix = np.stack([self._vectors[i][0] for i in candidates])
        query = np.asarray(embedding, dtype=np.float32)
        if matrix.shape[1] != query.shape[0]:
            return []
        scores = matrix @ (query / (float(np.linalg.norm(query)) or 1.0))
        best = np.argsort(-scores)[:limit]
        chosen = {candidates[int(b)]: float(scores[int(b)]) for b in best}
        records = await session.scalars(
            select(MemoryRecord).where(MemoryRecord.id.in_(list(chosen)))
        )
        return [_hit(r, chosen[r.id]) for r in records]

    def _remember_vector(self, record_id: str, vector: Any, source: str | None) -> None:
        if len(self._vectors) >= VECTOR_CACHE:
            self._vectors.clear()  # crude but bounded: the next searches read them again
        self._vectors[record_id] = (vector, source)

    async def list(
        self, scope: MemoryScope, *, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[MemoryRecord], int]:
        """Records of the scope, newest first, and how many there are in all."""
        where = [MemoryRecord.crew_key == scope.crew_key, MemoryRecord.owner == scope.owner]
        if kind:
            where.append(MemoryRecord.kind == kind)
        async with self.sessions() as session:
            total = await session.scalar(
                select(func.count()).select_from(MemoryRecord).where(*where)
            )
            rows = await session.scalars(
                select(MemoryRecord)
                .where(*where)
                .order_by(MemoryRecord.created_at.desc(), MemoryRecord.id)
                .limit(limit)
                .offset(offset)
            )
            return list(rows), int(total or 0)

    async def clear(self, scope: MemoryScope, *, kind: str | None = None) -> int:
        """Forget the scope's records (of one kind, or all); how many were removed."""
        where = [MemoryRecord.crew_key == scope.crew_key, MemoryRecord.owner == scope.owner]
        if kind:
            where.append(MemoryRecord.kind == kind)
        async with self.sessions() as session, session.begin():
            result = await session.execute(delete(MemoryRecord).where(*where))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _hit(record: MemoryRecord, score: float) -> Hit:
    return Hit(record.id, record.kind, record.content, dict(record.meta or {}), score)
