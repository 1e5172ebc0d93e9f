"""MCP tool servers: tools of servers the operator configures, named ``mcp:<server>/<tool>``.

``KASAL_MCP_SERVERS`` maps a server name to how to reach it::

    {"files": {"command": ["python", "-m", "my_server"], "env": {"TOKEN": "..."}},
     "search": {"url": "http://mcp.internal:8000/mcp", "headers": {"Authorization": "..."}}}

A ``command`` server speaks MCP over stdio (started per call, in its own process), a
``url`` server over streamable HTTP. Specs name servers, never commands or URLs: only the
operator decides what runs and where requests go. A server's tool list (names, descriptions,
argument schemas) is read once per worker process. Calls run through ``ObservedTool`` like
every tool, so their results are journaled and a retried attempt does not call again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from typing import Any

from crewai.tools import BaseTool
from pydantic import BaseModel, Field, create_model

from kasal.exceptions import UnknownToolError
from kasal.settings import get_settings

PREFIX = "mcp:"
_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}
_lock = threading.Lock()
_listings: dict[str, list[dict[str, Any]]] = {}


def is_mcp_name(name: str) -> bool:
    """True for ``mcp:<server>/<tool>``."""
    return name.startswith(PREFIX) and "/" in name[len(PREFIX) :]


def split_name(name: str) -> tuple[str, str]:
    """``mcp:server/tool`` -> ``(server, tool)``."""
    server, _, tool = name[len(PREFIX) :].partition("/")
    return server, tool


@asynccontextmanager
async def session(server: str) -> Any:
    """An initialised MCP client session with the configured ``server``."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamablehttp_client

    settings = get_settings()
    config = settings.mcp_servers.get(server)
    if config is None:
        raise UnknownToolError(
            f"no MCP server {server!r} is configured on this worker (KASAL_MCP_SERVERS)",
            field="tools",
        )
    if "url" in config:
        transport = streamablehttp_client(
            str(config["url"]),
            headers={str(k): str(v) for k, v in (config.get("headers") or {}).items()},
            timeout=settings.mcp_timeout,
        )
    else:
        command = list(config["command"])
        params = StdioServerParameters(
            command=command[0],
            args=command[1:],
            env={str(k): str(v) for k, v in (config.get("env") or {}).items()} or None,
        )
        transport = stdio_client(params)
    async with transport as streams, ClientSession(streams[0], streams[1]) as client:
        await client.initialize()
        yield client


async def list_tools(server: str) -> list[dict[str, Any]]:
    """The server's tools: name, description, inputSchema."""
    async with session(server) as client:
        listed = await client.list_tools()
    return [
        {"name": t.name, "description": t.description or "", "inputSchema": t.inputSchema}
        for t in listed.tools
    ]


def server_tools(server: str) -> list[dict[str, Any]]:
    """The server's tools, read once per process (blocking)."""
    with _lock:
        if server in _listings:
            return _listings[server]
    found = _run(list_tools(server))
    with _lock:
        _listings[server] = found
    return found


async def call_tool(server: str, tool: str, arguments: dict[str, Any]) -> str:
    """Call ``tool`` and return its content as text (an MCP error result as ``Error: ...``)."""
    async with session(server) as client:
        result = await client.call_tool(tool, arguments)
    parts = []
    for item in result.content:
        text = getattr(item, "text", None)
        parts.append(text if text is not None else json.dumps(item.model_dump(), default=str))
    text = "\n".join(parts)
    return f"Error: {text}" if result.isError else text


def _run(coro: Any) -> Any:
    timeout = get_settings().mcp_timeout
    return asyncio.run(asyncio.wait_for(coro, timeout))


def args_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model for a JSON Schema's top-level properties (what CrewAI shows the LLM)."""
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    for prop, spec in (schema.get("properties") or {}).items():
        kind = _TYPES.get(str(spec.get("type")), Any)
        description = spec.get("description") or prop
        if prop in required:
            fields[prop] = (kind, Field(description=description))
        else:
            fields[prop] = (kind | None, Field(default=None, description=description))
    safe = "".join(c if c.isalnum() else "_" for c in name)
    return create_model(f"MCP_{safe}_Args", **fields)


class MCPTool(BaseTool):
    """One tool of an MCP server, called over the server's transport."""

    server: str
    tool: str

    def _run(self, **kwargs: Any) -> str:
        arguments = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return str(_run(call_tool(self.server, self.tool, arguments)))
        except UnknownToolError:
            raise
        except Exception as exc:
            return f"Error: MCP server {self.server!r} failed: {type(exc).__name__}: {exc}"


def resolve_mcp_tool(name: str) -> MCPTool:
    """The tool ``mcp:<server>/<tool>``; an unconfigured server or unknown tool is a spec
    error (not retryable)."""
    server, tool = split_name(name)
    if server not in get_settings().mcp_servers:
        raise UnknownToolError(
            f"tool {name!r}: no MCP server {server!r} is configured on this worker "
            "(KASAL_MCP_SERVERS)",
            field="tools",
        )
    try:
        listing = server_tools(server)
    except Exception as exc:
        raise UnknownToolError(
            f"tool {name!r}: MCP server {server!r} could not be reached: {exc}", field="tools"
        ) from exc
    found = next((t for t in listing if t["name"] == tool), None)
    if found is None:
        names = ", ".join(t["name"] for t in listing) or "none"
        raise UnknownToolError(
            f"MCP server {server!r} has no tool {tool!r}; it has: {names}", field="tools"
        )
    return MCPTool(
        name=name,
        description=found["description"] or tool,
        args_schema=args_model(name, found["inputSchema"] or {}),
        server=server,
        tool=tool,
    )


def configured_tool_names(timeout: float = 10.0) -> list[str]:
    """``mcp:<server>/<tool>`` for every tool of every configured server that answers;
    ``mcp:<server>/*`` for a server that does not (yet)."""
    names: list[str] = []
    for server in sorted(get_settings().mcp_servers):
        try:
            names += [f"{PREFIX}{server}/{t['name']}" for t in server_tools(server)]
        except Exception:
            names.append(f"{PREFIX}{server}/*")
    return names
