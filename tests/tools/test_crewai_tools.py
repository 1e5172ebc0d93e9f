"""crewai_tools classes by name in data specs, with their arguments, once enabled."""

from __future__ import annotations

import pytest

from kasal.exceptions import UnknownToolError
from kasal.settings import get_settings
from kasal.tool_catalog import available_tools, describe_tools
from kasal.tools import resolve_tools
from tests.helpers import crew
from tests.tools.test_builtin_tools import http_server  # noqa: F401 - a fixture


def test_a_crewai_tools_class_is_built_with_spec_arguments_once_enabled(
    http_server,  # noqa: F811
    monkeypatch,
):
    page = b"<html><body><p>Durable crews since 2026</p></body></html>"
    http_server.routes["/about"] = lambda _h: (200, {"content-type": "text/html"}, page)
    spec = crew(
        [
            {
                "name": "read",
                "description": "Read the page",
                "tools": [
                    {
                        "name": "ScrapeWebsiteTool",
                        "args": {"website_url": http_server.url + "/about"},
                    }
                ],
            }
        ]
    )
    task = spec.tasks[0]
    assert task.tools == ["ScrapeWebsiteTool"]

    monkeypatch.setattr(get_settings(), "crewai_tools", [])
    with pytest.raises(UnknownToolError, match="KASAL_CREWAI_TOOLS"):
        resolve_tools(task.tools, task.tool_args)

    monkeypatch.setattr(get_settings(), "crewai_tools", ["ScrapeWebsiteTool"])
    # crewai_tools refuses private addresses on its own; the local test server is one.
    monkeypatch.setenv("CREWAI_TOOLS_ALLOW_UNSAFE_PATHS", "true")
    (tool,) = resolve_tools(task.tools, task.tool_args)
    assert "Durable crews since 2026" in tool.run()
    with pytest.raises(UnknownToolError):
        resolve_tools(["FileReadTool"])  # installed, but not enabled by the operator

    described = {d["name"]: d for d in describe_tools()}
    assert described["ScrapeWebsiteTool"]["source"] == "crewai_tools"
    assert "ScrapeWebsiteTool" in available_tools(list(described.values()))
    assert "FileReadTool" not in described
