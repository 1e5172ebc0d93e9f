"""The tool registry: specs name tools, workers resolve the names to CrewAI tools.

Custom tools subclass CrewAI's ``BaseTool`` and register by name::

    from crewai.tools import BaseTool
    from kasal.tools import register_tool

    @register_tool("word_count")
    class WordCount(BaseTool):
        name: str = "word_count"
        description: str = "Counts words"
        def _run(self, text: str) -> int:
            return len(text.split())

Workers import the modules named in KASAL_TOOL_MODULES on start, so their tools register.
"""

from __future__ import annotations

import ast
import importlib
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from kasal.exceptions import InvalidSpecError, UnknownToolError
from kasal.settings import get_settings

ToolFactory = Callable[[], BaseTool]
_REGISTRY: dict[str, ToolFactory] = {}


def register_tool(name: str, factory: ToolFactory | None = None) -> Any:
    """Register a tool under ``name``: a ``BaseTool`` subclass or a zero-argument factory.

    Usable as a decorator (``@register_tool("name")``) or a call.
    """

    def add(obj: Any) -> Any:
        _REGISTRY[name] = obj
        return obj

    return add(factory) if factory is not None else add


def registered_tools() -> list[str]:
    """Names of every registered tool."""
    return sorted(_REGISTRY)


def load_tool_modules(modules: list[str]) -> None:
    """Import the modules that register custom tools."""
    for module in modules:
        importlib.import_module(module)


def crewai_tool_allowed(name: str) -> bool:
    """True if the operator lets specs use ``crewai_tools.<name>`` (KASAL_CREWAI_TOOLS)."""
    allowed = get_settings().crewai_tools
    return "*" in allowed or name in allowed


def crewai_tool_class(name: str) -> type[BaseTool] | None:
    """The ``crewai_tools`` tool class called ``name`` (None if there is none, or
    ``crewai_tools`` is not installed: ``pip install 'kasal[tools]'``).

    ``crewai_tools`` is imported only when the operator enabled some of its tools: the
    import takes seconds.
    """
    if not name[:1].isupper() or not get_settings().crewai_tools:
        return None
    try:
        import crewai_tools
    except ImportError:
        return None
    found = getattr(crewai_tools, name, None)
    if isinstance(found, type) and issubclass(found, BaseTool):
        return found
    return None


def crewai_tool_names() -> list[str]:
    """Class names of the ``crewai_tools`` tools installed here that specs may use."""
    if not get_settings().crewai_tools:
        return []
    try:
        import crewai_tools
    except ImportError:
        return []
    return sorted(
        n for n in dir(crewai_tools) if crewai_tool_allowed(n) and crewai_tool_class(n) is not None
    )


def resolve_tools(
    names: list[str], args: dict[str, dict[str, Any]] | None = None
) -> list[BaseTool]:
    """Fresh tool instances for ``names``; an unknown name is a non-retryable spec error.

    A name is a registered tool, a ``crewai_tools`` class name (built with its ``args``), or
    ``mcp:<server>/<tool>``, a tool of an MCP server the operator configured.
    """
    from kasal import mcp

    args = args or {}
    unknown = [
        n
        for n in names
        if n not in _REGISTRY
        and not mcp.is_mcp_name(n)
        and not (crewai_tool_allowed(n) and crewai_tool_class(n) is not None)
    ]
    if unknown:
        hint = ""
        if any(n[:1].isupper() for n in unknown):
            hint = (
                "; a crewai_tools class is usable once the operator enables it "
                "(KASAL_CREWAI_TOOLS) and crewai-tools is installed (kasal[tools])"
            )
        raise UnknownToolError(
            f"unknown tool(s): {', '.join(unknown)}; registered: "
            f"{', '.join(registered_tools()) or 'none'}{hint}",
            field="tools",
        )
    tools: list[BaseTool] = []
    for name in names:
        given = args.get(name) or {}
        if name in _REGISTRY:
            if given:
                raise InvalidSpecError(
                    f"tool {name!r} takes no arguments from a spec (its operator configures it)",
                    field="tools",
                )
            tools.append(_REGISTRY[name]())
        elif mcp.is_mcp_name(name):
            tools.append(mcp.resolve_mcp_tool(name))
        else:
            cls = crewai_tool_class(name)
            assert cls is not None
            try:
                tools.append(cls(**given))
            except Exception as exc:
                raise InvalidSpecError(
                    f"crewai_tools.{name} cannot be built with {sorted(given)}: {exc}",
                    field="tools",
                ) from exc
    return tools


def confined_path(file_path: str) -> Path | str:
    """``file_path`` resolved under the files directory, or an error text if it is outside
    (or in the data directory, which holds the databases, unless the files dir is there)."""
    settings = get_settings()
    root = settings.readable_files_dir()
    target = (root / file_path).resolve()
    data_dir = settings.data_dir.resolve()
    outside = root != target and root not in target.parents
    in_data_dir = target == data_dir or data_dir in target.parents
    if outside or (in_data_dir and data_dir not in root.parents):
        return f"Error: {file_path} is outside the files directory"
    return target


# -- built-in tools ----------------------------------------------------------------------


class _FileReadArgs(BaseModel):
    file_path: str = Field(description="Path of the file to read, relative to the files dir")


@register_tool("file_read")
class FileReadTool(BaseTool):
    """Reads a text file under KASAL_FILES_DIR (never outside it)."""

    name: str = "file_read"
    description: str = "Read the content of a text file. Input: file_path."
    args_schema: type[BaseModel] = _FileReadArgs
    max_bytes: int = 200_000
    #: Reading has no effect: a retried attempt reads again instead of replaying.
    idempotent: bool = True

    def _run(self, file_path: str) -> str:
        target = confined_path(file_path)
        if isinstance(target, str):
            return target
        if not target.is_file():
            return f"Error: no such file: {file_path}"
        return Path(target).read_bytes()[: self.max_bytes].decode("utf-8", "replace")


class _CalculatorArgs(BaseModel):
    expression: str = Field(description="Arithmetic expression, e.g. (2 + 3) * 4")


_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


#: Bounds that keep one expression from holding the GIL (and the worker) for seconds.
MAX_BITS = 4096
MAX_DEPTH = 50


def _evaluate(node: ast.AST, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("expression too deeply nested")
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return _bounded(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            size = abs(left).bit_length() if isinstance(left, int) else 64
            if abs(right) > MAX_BITS or size * abs(right) > MAX_BITS:
                raise ValueError("number too large")
        ints = isinstance(left, int) and isinstance(right, int)
        if (
            isinstance(node.op, ast.Mult)
            and ints
            and left.bit_length() + right.bit_length() > MAX_BITS
        ):
            raise ValueError("number too large")
        return _bounded(_OPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.operand, depth + 1))
    raise ValueError("only numbers and + - * / // % ** are allowed")


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ValueError("number too large")
    return value


@register_tool("calculator")
class CalculatorTool(BaseTool):
    """Evaluates arithmetic safely (no names, no calls)."""

    name: str = "calculator"
    description: str = "Evaluate an arithmetic expression. Input: expression."
    args_schema: type[BaseModel] = _CalculatorArgs
    idempotent: bool = True

    def _run(self, expression: str) -> str:
        try:
            return str(_evaluate(ast.parse(expression, mode="eval")))
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
            return f"Error: {exc}"


# The documented built-in tools register themselves on import (they use the helpers above).
from kasal.tools_builtin import (  # noqa: E402
    CodeExecutionTool,
    DatabaseQueryTool,
    FileWriteTool,
    ScrapeWebsiteTool,
    WebSearchTool,
)

__all__ = [
    "CalculatorTool",
    "CodeExecutionTool",
    "DatabaseQueryTool",
    "FileReadTool",
    "FileWriteTool",
    "ScrapeWebsiteTool",
    "WebSearchTool",
    "register_tool",
    "registered_tools",
    "resolve_tools",
]
