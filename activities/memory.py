"""Memory and knowledge around one task attempt, as CrewAI uses them.

Before the task: knowledge sources (the crew's and the agent's) are read, chunked and
embedded into the crew's store once per content hash; then what the task should recall is
looked up by similarity to the task (its description and the context it sees) and added
to its prompt the way CrewAI adds it ("# Useful context from memory", "Additional
Information"). The lookup is journaled like a tool call: a retried attempt sees exactly
the prompt the first attempt saw, so the journaled LLM responses still replay.

After the task (``memory=True``): its outcome is remembered, keyed by execution, task and
step, so a retried or replayed task never writes it twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from activities.journal import TaskObserver
from kasal.embedders import Embedder, build_embedder, embedder_spec
from kasal.knowledge import load_source
from kasal.memory import Hit, MemoryScope, MemoryStore
from kasal.spec import AgentSpec, CrewSpec, KnowledgeSourceSpec, TaskSpec

#: The journal's name for a recall (it is journaled as a tool call of this name).
RECALL = "kasal:recall"
MEMORY_HITS = 3
KNOWLEDGE_HITS = 3
#: Characters of one remembered outcome shown in a prompt.
MEMORY_CHARS = 1000


@dataclass
class TaskMemory:
    """Memory and knowledge for one task attempt (built by :meth:`prepare`)."""

    store: MemoryStore
    scope: MemoryScope
    embedder_name: str
    embed: Embedder
    memory: bool
    #: Content hashes of the knowledge sources this task's agent sees.
    sources: set[str] = field(default_factory=set)

    @classmethod
    async def prepare(
        cls,
        store: MemoryStore,
        spec: CrewSpec,
        agent: AgentSpec,
        *,
        crew_id: str | None,
        owner: str | None,
    ) -> TaskMemory | None:
        """None when the crew uses neither memory nor knowledge; else the task's memory,
        with its knowledge sources stored (embedding only chunks not stored yet)."""
        sources = [*spec.knowledge_sources, *agent.knowledge_sources]
        if not spec.memory and not sources:
            return None
        embedder = embedder_spec(spec.embedder)
        task_memory = cls(
            store=store,
            scope=MemoryScope.of(crew_id, spec.name, owner),
            embedder_name=embedder.model,
            embed=build_embedder(embedder),
            memory=spec.memory,
        )
        for source in sources:
            task_memory.sources.add(await task_memory._ingest(source))
        return task_memory

    async def _ingest(self, source: KnowledgeSourceSpec) -> str:
        loaded = await asyncio.to_thread(load_source, source)
        chunks = loaded.chunks()
        prefix = f"knowledge/{loaded.digest[:40]}/{self.embedder_name}"
        keys = [f"{prefix}/{i}"[:255] for i in range(len(chunks))]
        have = await self.store.existing_keys(self.scope, keys)
        missing = [(k, c) for k, c in zip(keys, chunks, strict=True) if k not in have]
        if missing:
            vectors = await asyncio.to_thread(self.embed, [c for _, c in missing])
            for (key, chunk), vector in zip(missing, vectors, strict=True):
                await self.store.add(
                    self.scope,
                    kind="knowledge",
                    write_key=key,
                    content=chunk,
                    embedder=self.embedder_name,
                    embedding=vector,
                    meta={"source": loaded.digest, "label": loaded.label, **source.metadata},
                )
        return loaded.digest

    def recall(self, observer: TaskObserver, query: str) -> str:
        """What to add to the task's prompt (journaled: a retry gets the same text).

        Runs in CrewAI's thread.
        """
        previous = observer.before_tool(RECALL, {"query": query})
        if previous is not None:
            return previous
        vector = self.embed([query])[0]
        parts: list[str] = []
        if self.memory:
            hits = observer.wait_for(
                self.store.search(
                    self.scope, vector, self.embedder_name, kinds=("memory",), limit=MEMORY_HITS
                )
            )
            if hits:
                parts.append(
                    "\n\n# Useful context from memory:\n"
                    + "\n".join(f"- {_memory_line(h)}" for h in hits)
                )
        if self.sources:
            chunks = observer.wait_for(
                self.store.search(
                    self.scope,
                    vector,
                    self.embedder_name,
                    kinds=("knowledge",),
                    limit=KNOWLEDGE_HITS,
                    sources=self.sources,
                )
            )
            if chunks:
                parts.append("\n\nAdditional Information: " + "\n".join(h.content for h in chunks))
        text = "".join(parts)
        observer.after_tool(text)
        return text

    async def remember(
        self, *, execution_id: str, step: str, task: TaskSpec, agent: AgentSpec, output: str
    ) -> bool:
        """Store the task's outcome once per execution, task and step; False if it already
        was (a retried or replayed task)."""
        if not self.memory:
            return False
        key = f"task/{execution_id}/{step}"[:255]
        if await self.store.existing_keys(self.scope, [key]):
            return False
        vectors = await asyncio.to_thread(self.embed, [f"{task.description}\n{output}"])
        return await self.store.add(
            self.scope,
            kind="memory",
            write_key=key,
            content=output,
            embedder=self.embedder_name,
            embedding=vectors[0],
            meta={
                "execution_id": execution_id,
                "task": task.name,
                "agent": agent.name,
                "step": step,
                "observation": task.description[:500],
            },
        )


def _memory_line(hit: Hit) -> str:
    content = " ".join(hit.content.split())
    return content[:MEMORY_CHARS]
