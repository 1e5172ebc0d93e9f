"""Large outputs live outside workflow history: the workflow carries a reference.

Temporal stores every activity result in history (2 MB per payload, 50 MB per history), so
a task output above :data:`INLINE_LIMIT` characters is written to the app database and the
workflow keeps only its id and a preview. Activities and clients resolve ids back to text.
"""

from __future__ import annotations

import hashlib

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kasal.db.models import Blob
from kasal.exceptions import NotFoundError
from kasal.execution import CrewWorkflowResult

#: Outputs longer than this (characters) are kept as blobs.
INLINE_LIMIT = 16_000
#: How much of a blob's text the workflow keeps, for status and events.
PREVIEW_CHARS = 2_000


class BlobStore:
    """Content-addressed text blobs in the app database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def put(self, text: str) -> str:
        """Store ``text``; returns its id. Storing the same text again is a no-op."""
        blob_id = hashlib.sha256(text.encode()).hexdigest()
        try:
            async with self.sessions() as session, session.begin():
                if await session.get(Blob, blob_id) is None:
                    session.add(Blob(id=blob_id, size=len(text), data=text))
        except IntegrityError:
            pass  # written at the same moment by another attempt: same id, same text
        return blob_id

    async def get(self, blob_id: str) -> str:
        """The text of a blob."""
        async with self.sessions() as session:
            blob = await session.get(Blob, blob_id)
            if blob is None:
                raise NotFoundError(f"output blob {blob_id} not found", field="ref")
            return blob.data


async def resolve_result(result: CrewWorkflowResult, blobs: BlobStore) -> CrewWorkflowResult:
    """The result with every output that was kept outside history read back in full."""
    if result.output_ref is None and not any(t.ref for t in result.tasks):
        return result
    tasks = [
        t.model_copy(update={"raw": await blobs.get(t.ref), "ref": None}) if t.ref else t
        for t in result.tasks
    ]
    output = await blobs.get(result.output_ref) if result.output_ref else result.output
    return result.model_copy(update={"tasks": tasks, "output": output, "output_ref": None})
