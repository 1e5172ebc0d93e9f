"""What this worker's tools are and whether they work here: published at worker start, so
the API can check specs against them and serve ``GET /api/v1/tools``.

Imports CrewAI (through :mod:`kasal.tools`): workers only. The API reads what workers
published (``worker_catalogs`` for the names that run, ``tool_descriptions`` for what
they are).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kasal.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)


def describe_tools(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every tool this worker knows: name, description, argument JSON Schema, source and
    the reason it cannot run here ("" when it can)."""
    from kasal import mcp, tools

    settings = settings or get_settings()
    described: list[dict[str, Any]] = []
    for name in tools.registered_tools():
        try:
            tool = tools.resolve_tools([name])[0]
        except Exception as exc:  # a custom factory that needs something missing
            described.append(_entry(name, "", {}, "registered", f"cannot be built: {exc}"))
            continue
        check = getattr(type(tool), "configuration_problem", None)
        problem = (check(settings) if check else None) or ""
        builtin = type(tool).__module__ in ("kasal.tools", "kasal.tools_builtin")
        described.append(
            _entry(
                name,
                tool.description,
                _schema(tool),
                "builtin" if builtin else "registered",
                problem,
            )
        )
    for server in sorted(settings.mcp_servers):
        try:
            listing = mcp.server_tools(server)
        except Exception as exc:
            described.append(_entry(f"mcp:{server}/*", "", {}, "mcp", f"server unreachable: {exc}"))
            continue
        for item in listing:
            described.append(
                _entry(
                    f"mcp:{server}/{item['name']}",
                    item["description"],
                    item["inputSchema"] or {},
                    "mcp",
                    "",
                )
            )
    for name in tools.crewai_tool_names():
        cls = tools.crewai_tool_class(name)
        schema: dict[str, Any] = {}
        description = ""
        if cls is not None:
            fields = cls.model_fields
            args = fields.get("args_schema")
            description = str(getattr(fields.get("description"), "default", "") or "")
            model = getattr(args, "default", None)
            if isinstance(model, type) and hasattr(model, "model_json_schema"):
                schema = model.model_json_schema()
        described.append(_entry(name, description, schema, "crewai_tools", ""))
    return described


def available_tools(described: list[dict[str, Any]]) -> list[str]:
    """The names of the described tools that can run here."""
    return sorted(d["name"] for d in described if not d["problem"] or d["name"].endswith("/*"))


def _schema(tool: Any) -> dict[str, Any]:
    try:
        return dict(tool.args_schema.model_json_schema())
    except Exception:
        return {}


def _entry(
    name: str, description: str, schema: dict[str, Any], source: str, problem: str
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "args_schema": schema,
        "source": source,
        "problem": problem,
    }


async def publish_descriptions(engine: AsyncEngine, described: list[dict[str, Any]]) -> None:
    """Upsert the described tools into ``tool_descriptions`` (the newest worker wins)."""
    from kasal.db.engine import session_factory
    from kasal.db.models import ToolDescription, utcnow

    async with session_factory(engine)() as session, session.begin():
        for entry in described:
            row = await session.get(ToolDescription, entry["name"])
            if row is None:
                row = ToolDescription(name=entry["name"])
                session.add(row)
            row.description = entry["description"]
            row.args_schema = entry["args_schema"]
            row.source = entry["source"]
            row.problem = entry["problem"]
            row.updated_at = utcnow()
