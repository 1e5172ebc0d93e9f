"""MCP tool servers started by the test, over stdio and streamable HTTP: their tools are
listed with their schemas, called by name (``mcp:<server>/<tool>``), and a crew calls one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kasal import mcp
from kasal.client import start_execution
from kasal.exceptions import UnknownToolError
from kasal.settings import get_settings
from kasal.tools import resolve_tools
from tests.fixtures.llm_stub import ModelBehaviour
from tests.helpers import crew, stub_agent

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "mcp_server.py"


@pytest.fixture
def http_mcp():
    """The test MCP server over streamable HTTP, in a process of its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    process.kill()
    process.wait()


@pytest.fixture
def mcp_servers(monkeypatch, http_mcp, tmp_path):
    calls = tmp_path / "calls.log"
    servers = {
        "local": {"command": [sys.executable, str(SERVER)], "env": {"MCP_CALLS_LOG": str(calls)}},
        "remote": {"url": http_mcp},
    }
    monkeypatch.setattr(get_settings(), "mcp_servers", servers)
    monkeypatch.setattr(mcp, "_listings", {})
    return calls


def test_mcp_tools_over_stdio_and_http_are_listed_and_called(mcp_servers):
    names = mcp.configured_tool_names()
    assert set(names) == {
        "mcp:local/add",
        "mcp:local/shout",
        "mcp:remote/add",
        "mcp:remote/shout",
    }
    add, shout = resolve_tools(["mcp:local/add", "mcp:remote/shout"])
    assert add.args_schema.model_json_schema()["required"] == ["a", "b"]
    assert add.description == "Add two integers."
    assert add.run(a=2, b=40) == "sum=42"
    assert shout.run(text="durable") == "DURABLE"
    assert mcp_servers.read_text() == "add 2 40\n"

    with pytest.raises(UnknownToolError, match="no tool 'nope'"):
        resolve_tools(["mcp:remote/nope"])
    with pytest.raises(UnknownToolError, match="no MCP server 'ghost'"):
        resolve_tools(["mcp:ghost/add"])


async def test_a_crew_calls_an_mcp_tool(temporal_client, task_queue, worker, llm_stub, mcp_servers):
    # CrewAI offers tools to the LLM under sanitised names: mcp:local/add -> mcp_local_add.
    llm_stub.behaviours["mcp"] = ModelBehaviour(steps=[("mcp_local_add", {"a": 20, "b": 22})])
    agent = stub_agent("mcp", llm_stub.base_url)
    agent["tools"] = ["mcp:local/add"]
    spec = crew([{"name": "sum", "description": "Add twenty and twenty-two"}], agents=[agent])

    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    result = await handle.result()

    assert mcp_servers.read_text() == "add 20 22\n"
    assert "sum=42" in llm_stub.requests_for("mcp")[-1].prompt
    assert result.output == llm_stub.answer_for("mcp", llm_stub.requests_for("mcp")[-1].prompt)
