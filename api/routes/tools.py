"""The tool catalog: every tool the workers know, what it does, its arguments, and whether
it is configured on the workers polling the task queue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import CurrentPrincipal, OptionalTemporalClientDep, SessionDep, SettingsDep
from api.services.catalog import load_catalog
from kasal.catalog import BUILTIN_TOOLS, CONFIGURABLE_TOOLS
from kasal.db.models import ToolDescription

router = APIRouter(prefix="/tools", tags=["tools"])


class ToolOut(BaseModel):
    """One tool of the catalog."""

    name: str
    description: str
    #: JSON Schema of the tool's arguments (what the LLM fills in).
    args_schema: dict[str, Any]
    #: ``builtin``, ``registered`` (KASAL_TOOL_MODULES), ``mcp`` or ``crewai_tools``.
    source: str
    #: True if the workers can run it now (configured, reachable).
    configured: bool
    #: Why a worker said it cannot run it ("" if none did).
    problem: str = ""


class ToolCatalog(BaseModel):
    """Every known tool, by name."""

    items: list[ToolOut]


@router.get("", response_model=ToolCatalog)
async def list_tools(
    principal: CurrentPrincipal,
    session: SessionDep,
    client: OptionalTemporalClientDep,
    settings: SettingsDep,
):
    """The catalog. Workers describe their tools at start; until one has, the built-in
    tools are listed without descriptions."""
    catalog = await load_catalog(session, client, settings.task_queue, settings.llm_base_urls)
    rows = {r.name: r for r in (await session.scalars(select(ToolDescription))).all()}
    names = sorted(set(rows) | set(BUILTIN_TOOLS) | set(CONFIGURABLE_TOOLS))
    items = []
    for name in names:
        row = rows.get(name)
        configured = catalog.has_tool(name) and not name.endswith("/*")
        items.append(
            ToolOut(
                name=name,
                description=row.description if row else "",
                args_schema=row.args_schema if row else {},
                source=row.source if row else "builtin",
                configured=configured,
                problem="" if configured else (row.problem if row else "not configured"),
            )
        )
    return ToolCatalog(items=items)
