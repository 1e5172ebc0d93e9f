"""The documented built-in tools: web search, scraping, read-only SQL, sandboxed Python, and
writing files. Each is safe by default and configured by the operator (``KASAL_*``
settings); one that is not configured answers with a clear refusal instead of guessing.

Tools whose effect must not happen twice (running code, querying, scraping, writing) are
journaled by the worker (``activities/journal.py``): a retried attempt gets the finished
call's result back instead of running it again. Tools that only read something that does
not change under them say ``idempotent = True`` and simply run again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import sqlite3
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import httpx
from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from kasal.sandbox import SandboxLimits, probe, run_python
from kasal.settings import Settings, get_settings
from kasal.tools import confined_path, register_tool


class ConfigurableTool(BaseTool):
    """A built-in tool that needs operator configuration to work."""

    idempotent: bool = False

    @classmethod
    def configuration_problem(cls, settings: Settings) -> str | None:
        """Why this tool cannot work on this worker (None: it can)."""
        return None

    def refusal(self) -> str | None:
        problem = self.configuration_problem(get_settings())
        return f"Error: {self.name} is not available: {problem}" if problem else None


# -- web_search -------------------------------------------------------------------------

PROVIDER_URLS = {
    "serper": "https://google.serper.dev/search",
    "tavily": "https://api.tavily.com/search",
    "brave": "https://api.search.brave.com/res/v1/web/search",
}


class _WebSearchArgs(BaseModel):
    query: str = Field(description="What to search the web for")
    max_results: int = Field(default=5, ge=1, le=20, description="How many results")


@register_tool("web_search")
class WebSearchTool(ConfigurableTool):
    """Searches the web with the operator's provider (Serper, Tavily or Brave); results are
    normalised to title, url and snippet."""

    name: str = "web_search"
    description: str = (
        "Search the web. Input: query (and optionally max_results). Returns a JSON list of "
        "results, each with title, url and snippet."
    )
    args_schema: type[BaseModel] = _WebSearchArgs

    @classmethod
    def configuration_problem(cls, settings: Settings) -> str | None:
        provider = settings.web_search_provider.lower()
        if provider not in PROVIDER_URLS:
            return (
                "no search provider is configured (KASAL_WEB_SEARCH_PROVIDER: serper, "
                "tavily or brave, with KASAL_WEB_SEARCH_API_KEY)"
            )
        if not (settings.web_search_api_key and settings.web_search_api_key.get_secret_value()):
            return f"KASAL_WEB_SEARCH_API_KEY is not set for {provider}"
        return None

    def _run(self, query: str, max_results: int = 5) -> str:
        if (refused := self.refusal()) is not None:
            return refused
        settings = get_settings()
        provider = settings.web_search_provider.lower()
        url = settings.web_search_url or PROVIDER_URLS[provider]
        key = settings.web_search_api_key.get_secret_value()  # type: ignore[union-attr]
        try:
            with httpx.Client(timeout=settings.scrape_timeout) as client:
                if provider == "serper":
                    response = client.post(
                        url, json={"q": query, "num": max_results}, headers={"X-API-KEY": key}
                    )
                elif provider == "tavily":
                    response = client.post(
                        url,
                        json={"query": query, "max_results": max_results},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                else:
                    response = client.get(
                        url,
                        params={"q": query, "count": max_results},
                        headers={"X-Subscription-Token": key, "Accept": "application/json"},
                    )
            response.raise_for_status()
            results = normalise_results(provider, response.json())
        except (httpx.HTTPError, ValueError) as exc:
            return f"Error: the {provider} search failed: {exc}"
        return json.dumps(results[:max_results], ensure_ascii=False)


def normalise_results(provider: str, data: dict[str, Any]) -> list[dict[str, str]]:
    """A provider's answer as a list of ``{title, url, snippet}``."""
    if provider == "serper":
        items = [(r.get("title"), r.get("link"), r.get("snippet")) for r in data["organic"]]
    elif provider == "tavily":
        items = [(r.get("title"), r.get("url"), r.get("content")) for r in data["results"]]
    else:
        found = data.get("web", {}).get("results", [])
        items = [(r.get("title"), r.get("url"), r.get("description")) for r in found]
    return [{"title": t or "", "url": u or "", "snippet": s or ""} for t, u, s in items]


# -- scrape_website ---------------------------------------------------------------------


class _ScrapeArgs(BaseModel):
    url: str = Field(description="The http(s) URL of the page to read")


class _Text(HTMLParser):
    SKIP: ClassVar[set[str]] = {"script", "style", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping and data.strip():
            self.parts.append(data.strip())


def html_text(html: str) -> str:
    """The visible text of an HTML page, one block per line."""
    parser = _Text()
    parser.feed(html)
    return "\n".join(parser.parts)


def check_public_url(url: str, allowed_hosts: list[str]) -> str | None:
    """Why ``url`` may not be fetched (None: it may): only http(s), and no private,
    loopback, link-local or reserved address unless its host is explicitly allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"only http(s) URLs can be fetched, not {url!r}"
    host = parts.hostname
    if host in allowed_hosts:
        return None
    try:
        infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if str(address) in allowed_hosts:
            continue
        if not address.is_global or address.is_multicast:
            return (
                f"{host} resolves to a private or reserved address ({address}); an operator "
                "may allow it in KASAL_SCRAPE_ALLOWED_HOSTS"
            )
    return None


@register_tool("scrape_website")
class ScrapeWebsiteTool(ConfigurableTool):
    """Fetches a public web page and returns its text, within size and time limits."""

    name: str = "scrape_website"
    description: str = "Read a web page and return its visible text. Input: url."
    args_schema: type[BaseModel] = _ScrapeArgs
    max_redirects: int = 5

    def _run(self, url: str) -> str:
        settings = get_settings()
        deadline = time.monotonic() + settings.scrape_timeout
        try:
            with httpx.Client(timeout=settings.scrape_timeout, follow_redirects=False) as client:
                for _hop in range(self.max_redirects + 1):
                    # Every hop is checked: a public page may redirect to an internal one.
                    if problem := check_public_url(url, settings.scrape_allowed_hosts):
                        return f"Error: {problem}"
                    with client.stream("GET", url) as response:
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        body = bytearray()
                        for block in response.iter_bytes():
                            body += block
                            if len(body) > settings.scrape_max_bytes:
                                return (
                                    f"Error: {url} is larger than {settings.scrape_max_bytes} bytes"
                                )
                            if time.monotonic() > deadline:
                                return f"Error: {url} took longer than {settings.scrape_timeout}s"
                        if response.status_code >= 400:
                            return f"Error: {url} answered HTTP {response.status_code}"
                        text = body.decode(response.encoding or "utf-8", "replace")
                        if "html" in response.headers.get("content-type", "html"):
                            text = html_text(text)
                        return text
                return f"Error: more than {self.max_redirects} redirects"
        except httpx.HTTPError as exc:
            return f"Error: fetching {url} failed: {exc}"


# -- database_query ---------------------------------------------------------------------


class _QueryArgs(BaseModel):
    database: str = Field(description="Name of the database to query")
    sql: str = Field(description="One read-only SQL statement (SELECT ...)")


class QueryRefused(Exception):
    """The statement is not allowed (it writes, or names what it may not)."""


def _same_database(url: str, app_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(app_url)
    if a.scheme.startswith("sqlite") or b.scheme.startswith("sqlite"):
        if not (a.scheme.startswith("sqlite") and b.scheme.startswith("sqlite")):
            return False
        return (
            Path(a.path.lstrip("/") or ":memory:").resolve()
            == Path(b.path.lstrip("/") or ":memory:").resolve()
        )
    return (a.hostname, a.port or 5432, a.path) == (b.hostname, b.port or 5432, b.path)


def _sqlite_path(url: str) -> str:
    # sqlite:///relative.db and sqlite:////abs/path.db, as SQLAlchemy spells them.
    return url.split(":///", 1)[1]


#: What a read-only SQLite statement may do (sqlite3's authorizer action codes).
_SQLITE_READ = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


#: Columns, rows (at most the cap) and whether there were more.
Rows = tuple[list[str], list[tuple[Any, ...]], bool]


def query_sqlite(path: str, sql: str, timeout: float, max_rows: int) -> Rows:
    """Run one read-only statement on a SQLite file: opened read-only, ``query_only``, an
    authorizer that allows reading and nothing else (no ATTACH, no PRAGMA), a deadline."""
    if not Path(path).is_file():
        raise QueryRefused(f"no such SQLite database file: {path}")
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=timeout)
    try:
        conn.execute("PRAGMA query_only = ON")

        def authorize(action: int, *_args: Any) -> int:
            return sqlite3.SQLITE_OK if action in _SQLITE_READ else sqlite3.SQLITE_DENY

        conn.set_authorizer(authorize)
        deadline = time.monotonic() + timeout
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cursor = conn.execute(sql)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.DatabaseError as exc:
            if "interrupted" in str(exc):
                raise TimeoutError(f"the query ran longer than {timeout}s and was stopped") from exc
            if "not authorized" in str(exc):
                raise QueryRefused("only reading statements are allowed (SELECT, WITH)") from exc
            raise
        columns = [d[0] for d in cursor.description or []]
        return columns, rows[:max_rows], len(rows) > max_rows
    finally:
        conn.close()


async def query_postgres(url: str, sql: str, timeout: float, max_rows: int) -> Rows:
    """Run one statement in a READ ONLY transaction with a statement timeout, rolled back."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        tx = conn.transaction(readonly=True)
        await tx.start()
        try:
            await conn.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
            # A prepared statement is one statement: ``SELECT 1; COMMIT; DROP ...`` is refused.
            statement = await conn.prepare(sql)
            rows: list[tuple[Any, ...]] = []
            async for record in statement.cursor():
                rows.append(tuple(record.values()))
                if len(rows) > max_rows:
                    break
            columns = [a.name for a in statement.get_attributes()]
        except asyncpg.exceptions.QueryCanceledError as exc:
            raise TimeoutError(f"the query ran longer than {timeout}s and was stopped") from exc
        except asyncpg.exceptions.ReadOnlySQLTransactionError as exc:
            raise QueryRefused(f"only reading statements are allowed: {exc}") from exc
        finally:
            await tx.rollback()
        return columns, rows[:max_rows], len(rows) > max_rows
    finally:
        await conn.close()


@register_tool("database_query")
class DatabaseQueryTool(ConfigurableTool):
    """Read-only SQL against the databases an operator names (``KASAL_QUERY_DATABASES``)."""

    name: str = "database_query"
    description: str = (
        "Run one read-only SQL statement (SELECT) on a named database. Input: database, sql. "
        "Returns the columns and rows as JSON."
    )
    args_schema: type[BaseModel] = _QueryArgs

    @classmethod
    def configuration_problem(cls, settings: Settings) -> str | None:
        if not settings.query_databases:
            return "no databases are configured (KASAL_QUERY_DATABASES, name -> URL)"
        return None

    def _run(self, database: str, sql: str) -> str:
        if (refused := self.refusal()) is not None:
            return refused
        settings = get_settings()
        url = settings.query_databases.get(database)
        if url is None:
            names = ", ".join(sorted(settings.query_databases))
            return f"Error: unknown database {database!r}; configured: {names}"
        if _same_database(url, settings.resolved_database_url()):
            return f"Error: {database!r} is Kasal's own database, which is never queryable"
        try:
            if url.startswith("sqlite"):
                columns, rows, more = query_sqlite(
                    _sqlite_path(url), sql, settings.query_timeout, settings.query_max_rows
                )
            elif url.startswith("postgres"):
                columns, rows, more = asyncio.run(
                    query_postgres(url, sql, settings.query_timeout, settings.query_max_rows)
                )
            else:
                return f"Error: {database!r} is neither PostgreSQL nor SQLite"
        except (QueryRefused, TimeoutError) as exc:
            return f"Error: {exc}"
        except Exception as exc:  # the database's own message helps the agent fix its SQL
            return f"Error: {type(exc).__name__}: {exc}"
        answer: dict[str, Any] = {"columns": columns, "rows": [list(r) for r in rows]}
        if more:
            answer["truncated"] = f"only the first {settings.query_max_rows} rows"
        return json.dumps(answer, default=str, ensure_ascii=False)


# -- code_execution ---------------------------------------------------------------------


class _CodeArgs(BaseModel):
    code: str = Field(description="Python code to run; print what you want to see")


@register_tool("code_execution")
class CodeExecutionTool(ConfigurableTool):
    """Runs Python (standard library) in a sandbox: no network, no access to the worker's
    files or environment, bounded memory, CPU, time and output (see :mod:`kasal.sandbox`)."""

    name: str = "code_execution"
    description: str = (
        "Run Python code (standard library only) in an isolated sandbox and return what it "
        "prints. No network, no files outside its own temporary directory. Input: code."
    )
    args_schema: type[BaseModel] = _CodeArgs

    @classmethod
    def configuration_problem(cls, settings: Settings) -> str | None:
        if not settings.code_execution_require_isolation:
            return None
        found = probe(settings.code_execution_python)
        if found.network_isolated and found.landlock:
            return None
        return (
            "this worker cannot isolate code (a network namespace and Landlock are needed; "
            "KASAL_CODE_EXECUTION_REQUIRE_ISOLATION=false runs it with limits only)"
        )

    def _run(self, code: str) -> str:
        settings = get_settings()
        limits = SandboxLimits(
            wall_seconds=settings.code_execution_timeout,
            cpu_seconds=max(1, int(settings.code_execution_timeout)),
            memory_bytes=settings.code_execution_memory_mb * 1024 * 1024,
            output_bytes=settings.code_execution_output_bytes,
            require_isolation=settings.code_execution_require_isolation,
            python=settings.code_execution_python,
        )
        return run_python(code, limits).as_text()


# -- file_write -------------------------------------------------------------------------


class _FileWriteArgs(BaseModel):
    file_path: str = Field(description="Path of the file to write, relative to the files dir")
    content: str = Field(description="The text to write")
    overwrite: bool = Field(default=False, description="Replace the file if it exists")


@register_tool("file_write")
class FileWriteTool(ConfigurableTool):
    """Writes a text file under the files directory (never outside it)."""

    name: str = "file_write"
    description: str = "Write text to a file. Input: file_path, content, overwrite (optional)."
    args_schema: type[BaseModel] = _FileWriteArgs
    max_bytes: int = 1_000_000

    def _run(self, file_path: str, content: str, overwrite: bool = False) -> str:
        target = confined_path(file_path)
        if isinstance(target, str):
            return target
        data = content.encode()
        if len(data) > self.max_bytes:
            return f"Error: content is larger than {self.max_bytes} bytes"
        if target.exists() and not overwrite:
            return f"Error: {file_path} exists (set overwrite to replace it)"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"wrote {len(data)} bytes to {file_path}"
