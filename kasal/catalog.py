"""What a crew may name, checked before it runs: tools, LLM providers, spec-chosen endpoints.

A spec names tools and models; workers resolve them only when a task runs, so a typo used
to fail minutes into an execution. :func:`check_spec` finds those problems up front, from a
:class:`Catalog` of what the workers can resolve. It is a plain function with no web or
Temporal import: the API checks crews and starts with it, and ``kasal validate`` can too.

Workers publish the tool names they can resolve into the app database when they start
(:func:`publish_worker_tools`); the API builds its catalog from the workers that are polling
the task queue. Until any worker has published, the built-in registry is all that is known.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kasal.spec import CrewSpec, LLMSpec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

#: LLM providers a worker resolves (the prefixes of ``kasal.llm.build_llm``; that module
#: imports CrewAI, which the API must not, so the names are repeated here and a test keeps
#: the two lists equal).
PROVIDERS: tuple[str, ...] = (
    "openai",
    "databricks",
    "ollama",
    "compatible",
    "offline",
    "anthropic",
    "gemini",
    "azure",
    "bedrock",
)
#: Tools every worker has without KASAL_TOOL_MODULES or configuration (``kasal.tools``' own
#: registrations).
BUILTIN_TOOLS: tuple[str, ...] = (
    "calculator",
    "code_execution",
    "file_read",
    "file_write",
    "scrape_website",
)
#: Built-in tools that work only once an operator configures them (README "Tools").
CONFIGURABLE_TOOLS: tuple[str, ...] = ("database_query", "web_search")

#: Where a catalog's tool list came from, for error messages that explain a refusal.
SOURCE_LIVE = "the catalogs of the workers polling the task queue"
SOURCE_PUBLISHED = (
    "the catalogs workers published for the task queue (none of them is polling it now)"
)
SOURCE_BUILTIN = (
    "the built-in tool registry (no worker has published its catalog for this task queue "
    "yet; workers do at start)"
)


@dataclass(frozen=True)
class Problem:
    """One reason a spec cannot run: ``field`` is a dotted path (``agents.0.tools.1``, as in
    validation errors), ``code`` a stable kind, ``message`` says why in words."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The problem as JSON data (the API's error details)."""
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Catalog:
    """What the workers can resolve: tool names, providers, and the endpoint prefixes specs
    may point an LLM at (``KASAL_LLM_BASE_URLS``; empty means specs may choose none)."""

    tools: frozenset[str]
    providers: frozenset[str] = frozenset(PROVIDERS)
    base_urls: tuple[str, ...] = ()
    #: Where ``tools`` came from (one of the ``SOURCE_*`` texts), quoted in problems.
    source: str = SOURCE_BUILTIN

    @classmethod
    def of(
        cls,
        tools: Iterable[str] = BUILTIN_TOOLS,
        *,
        base_urls: Sequence[str] = (),
        source: str = SOURCE_BUILTIN,
    ) -> Catalog:
        """A catalog of these tools and the standard providers."""
        return cls(tools=frozenset(tools), base_urls=tuple(base_urls), source=source)

    def has_tool(self, name: str) -> bool:
        """True if a worker resolves ``name`` (``mcp:<server>/*`` stands for every tool of
        an MCP server that did not answer when its worker started)."""
        if name in self.tools:
            return True
        server = name.rpartition("/")[0]
        return name.startswith("mcp:") and f"{server}/*" in self.tools

    def allows_base_url(self, url: str) -> bool:
        """True if a spec may send requests (and a key) to ``url`` (as ``Settings`` decides)."""
        return any(url.startswith(prefix) for prefix in self.base_urls)


def check_spec(spec: CrewSpec, catalog: Catalog) -> list[Problem]:
    """Every tool, provider and ``base_url`` in ``spec`` that ``catalog`` cannot serve.

    An empty list means the spec can run as far as names go; keys and reachability are
    still the worker's to find out.
    """
    problems: list[Problem] = []
    agents = [(f"agents.{i}", agent) for i, agent in enumerate(spec.agents)]
    if spec.manager_agent is not None:
        agents.append(("manager_agent", spec.manager_agent))
    for path, agent in agents:
        if spec.project:
            # A code crew's models are the project's own CrewAI objects, built by its code
            # on the workers (any provider CrewAI routes): only its tools' names are Kasal's.
            continue
        problems += _check_llm(f"{path}.llm", agent.llm, catalog)
        if agent.function_calling_llm is not None:
            problems += _check_llm(
                f"{path}.function_calling_llm", agent.function_calling_llm, catalog
            )
        problems += _check_tools(f"{path}.tools", agent.tools, catalog)
    if spec.manager_llm is not None and not spec.project:
        problems += _check_llm("manager_llm", spec.manager_llm, catalog)
    if spec.planning_llm is not None and not spec.project:
        problems += _check_llm("planning_llm", spec.planning_llm, catalog)
    for i, task in enumerate(spec.tasks):
        problems += _check_tools(f"tasks.{i}.tools", task.tools, catalog)
    return problems


def _check_tools(path: str, names: list[str], catalog: Catalog) -> list[Problem]:
    known = ", ".join(sorted(catalog.tools)) or "none"
    problems = []
    for j, name in enumerate(names):
        if catalog.has_tool(name):
            continue
        if name in CONFIGURABLE_TOOLS:
            message = (
                f"tool {name!r} is not configured on the workers: not in {catalog.source} "
                f"(GET /api/v1/tools says what it needs); known tools: {known}"
            )
            problems.append(Problem(f"{path}.{j}", "unknown_tool", message))
            continue
        message = f"unknown tool {name!r}: not in {catalog.source}; known tools: {known}"
        problems.append(Problem(f"{path}.{j}", "unknown_tool", message))
    return problems


def _check_llm(path: str, llm: LLMSpec, catalog: Catalog) -> list[Problem]:
    if llm.provider not in catalog.providers:
        return [
            Problem(
                f"{path}.model",
                "unknown_provider",
                f"unknown LLM provider {llm.provider!r} in {llm.model!r}; known providers: "
                + ", ".join(sorted(catalog.providers)),
            )
        ]
    # The offline provider never opens a connection, so its base_url is never used.
    if llm.provider != "offline" and llm.base_url and not catalog.allows_base_url(llm.base_url):
        return [
            Problem(
                f"{path}.base_url",
                "base_url_not_allowed",
                # The allowlist itself is not quoted: it may name internal hosts.
                f"base_url {llm.base_url!r} is not allowed: an operator lists the endpoints "
                "specs may use in KASAL_LLM_BASE_URLS",
            )
        ]
    return []


def worker_identity() -> str:
    """This process's identity as Temporal reports its pollers (the SDK's default,
    ``pid@hostname``), so the API can tell which published catalogs are polling now."""
    return f"{os.getpid()}@{socket.gethostname()}"


async def publish_worker_tools(
    engine: AsyncEngine, task_queue: str, tools: Iterable[str], identity: str | None = None
) -> None:
    """Record in the app database which tools this worker resolves for ``task_queue``.

    Called once at worker start, after the migrations; a restarted worker replaces its row.
    """
    from kasal.db.engine import session_factory
    from kasal.db.repositories import WorkerCatalogRepository

    async with session_factory(engine)() as session, session.begin():
        await WorkerCatalogRepository(session).publish(
            identity or worker_identity(), task_queue, sorted(set(tools))
        )
