"""The documented built-in tools against real servers: search providers' APIs on a local HTTP
server, scraping with its address and size rules, read-only SQL on real SQLite and
PostgreSQL, the code sandbox, confined file writes, and refusals when not configured."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from kasal.sandbox import SandboxLimits, run_python
from kasal.settings import get_settings
from kasal.tools import (
    CodeExecutionTool,
    DatabaseQueryTool,
    FileReadTool,
    FileWriteTool,
    ScrapeWebsiteTool,
    WebSearchTool,
    resolve_tools,
)
from tests.fixtures.db import POSTGRES_URL


class _Server:
    """A local HTTP server answering with ``routes[path](handler) -> (status, headers, body)``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[str, Any] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                route = server.routes.get(self.path.split("?")[0])
                status, headers, payload = route(self) if route else (404, {}, b"no")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def http_server():
    server = _Server()
    yield server
    server.httpd.shutdown()


def _json(data: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"content-type": "application/json"}, json.dumps(data).encode()


# -- web_search ---------------------------------------------------------------------------

PROVIDER_ANSWERS = {
    "serper": {"organic": [{"title": "Kasal", "link": "https://k.example", "snippet": "durable"}]},
    "tavily": {"results": [{"title": "Kasal", "url": "https://k.example", "content": "durable"}]},
    "brave": {
        "web": {
            "results": [{"title": "Kasal", "url": "https://k.example", "description": "durable"}]
        }
    },
}


@pytest.mark.parametrize("provider", ["serper", "tavily", "brave"])
def test_web_search_speaks_each_providers_api_and_normalises(provider, http_server, monkeypatch):
    http_server.routes["/search"] = lambda _h: _json(PROVIDER_ANSWERS[provider])
    settings = get_settings()
    monkeypatch.setattr(settings, "web_search_provider", provider)
    monkeypatch.setattr(settings, "web_search_api_key", SecretStr("key-123"))
    monkeypatch.setattr(settings, "web_search_url", http_server.url + "/search")

    answer = json.loads(WebSearchTool().run(query="durable crews", max_results=3))

    assert answer == [{"title": "Kasal", "url": "https://k.example", "snippet": "durable"}]
    request = http_server.requests[-1]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    if provider == "serper":
        assert headers["x-api-key"] == "key-123"
        assert json.loads(request["body"]) == {"q": "durable crews", "num": 3}
    elif provider == "tavily":
        assert headers["authorization"] == "Bearer key-123"
        assert json.loads(request["body"])["query"] == "durable crews"
    else:
        assert headers["x-subscription-token"] == "key-123"
        assert "q=durable+crews" in request["path"] and "count=3" in request["path"]


def test_unconfigured_tools_refuse_clearly(monkeypatch):
    settings = get_settings()
    monkeypatch.setattr(settings, "web_search_provider", "")
    monkeypatch.setattr(settings, "query_databases", {})
    assert "KASAL_WEB_SEARCH_PROVIDER" in WebSearchTool().run(query="x")
    assert "KASAL_QUERY_DATABASES" in DatabaseQueryTool().run(database="x", sql="select 1")


# -- scrape_website -----------------------------------------------------------------------


def test_scrape_refuses_private_addresses_unless_allowed(http_server, monkeypatch):
    page = b"<html><script>secret()</script><h1>Title</h1><p>Body text</p></html>"
    http_server.routes["/page"] = lambda _h: (200, {"content-type": "text/html"}, page)
    http_server.routes["/big"] = lambda _h: (200, {"content-type": "text/plain"}, b"x" * 5000)
    http_server.routes["/hop"] = lambda _h: (302, {"location": "http://10.0.0.1/admin"}, b"")
    settings = get_settings()
    monkeypatch.setattr(settings, "scrape_allowed_hosts", [])
    assert "private or reserved" in ScrapeWebsiteTool().run(url=http_server.url + "/page")
    assert "only http(s)" in ScrapeWebsiteTool().run(url="file:///etc/passwd")

    monkeypatch.setattr(settings, "scrape_allowed_hosts", ["127.0.0.1"])
    assert ScrapeWebsiteTool().run(url=http_server.url + "/page") == "Title\nBody text"
    # A redirect is checked again: an allowed host cannot bounce the fetch inward.
    assert "10.0.0.1" in ScrapeWebsiteTool().run(url=http_server.url + "/hop")
    monkeypatch.setattr(settings, "scrape_max_bytes", 1000)
    assert "larger than 1000 bytes" in ScrapeWebsiteTool().run(url=http_server.url + "/big")


# -- database_query -----------------------------------------------------------------------


def test_database_query_on_sqlite_reads_but_never_writes(tmp_path, monkeypatch):
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("create table items (id integer primary key, name text)")
    conn.executemany("insert into items (name) values (?)", [(f"item{i}",) for i in range(10)])
    conn.commit()
    conn.close()
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    settings = get_settings()
    monkeypatch.setattr(settings, "query_databases", {"shop": f"sqlite:///{path}"})
    monkeypatch.setattr(settings, "query_max_rows", 3)
    monkeypatch.setattr(settings, "query_timeout", 0.3)
    tool = DatabaseQueryTool()

    answer = json.loads(tool.run(database="shop", sql="select id, name from items order by id"))
    assert answer["columns"] == ["id", "name"]
    assert answer["rows"] == [[1, "item0"], [2, "item1"], [3, "item2"]]
    assert "3 rows" in answer["truncated"]

    for write in [
        "insert into items (name) values ('evil')",
        "delete from items",
        "drop table items",
        f"attach database '{other}' as o",
        "pragma query_only = off",
    ]:
        assert tool.run(database="shop", sql=write).startswith("Error"), write
    assert sqlite3.connect(path).execute("select count(*) from items").fetchone() == (10,)

    slow = "with recursive n(i) as (select 1 union all select i + 1 from n) select max(i) from n"
    assert "longer than 0.3s" in tool.run(database="shop", sql=slow)
    assert "unknown database" in tool.run(database="nope", sql="select 1")


async def test_database_query_on_postgres_is_read_only_and_bounded(monkeypatch):
    schema = f"q_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    await conn.execute(f"create schema {schema}; create table {schema}.t (n int)")
    await conn.execute(f"insert into {schema}.t select generate_series(1, 5)")
    settings = get_settings()
    url = POSTGRES_URL.replace("+asyncpg", "")
    monkeypatch.setattr(settings, "query_timeout", 0.5)
    tool = DatabaseQueryTool()
    try:
        monkeypatch.setattr(settings, "query_databases", {"warehouse": url})
        monkeypatch.setattr(settings, "database_url", "sqlite+aiosqlite:///elsewhere.db")

        def run(sql: str) -> str:
            return tool.run(database="warehouse", sql=sql)

        answer = json.loads(await _thread(run, f"select n from {schema}.t order by n"))
        assert answer["rows"] == [[1], [2], [3], [4], [5]]
        for write in [
            f"insert into {schema}.t values (99)",
            f"update {schema}.t set n = 0",
            f"drop table {schema}.t",
        ]:
            assert "only reading statements" in await _thread(run, write), write
        # Two statements cannot smuggle a COMMIT and a write past the read-only transaction.
        assert (await _thread(run, f"commit; delete from {schema}.t")).startswith("Error")
        assert "longer than 0.5s" in await _thread(run, "select pg_sleep(3)")
        assert await conn.fetchval(f"select count(*) from {schema}.t") == 5

        # The app database is never queryable, whatever name the operator gives it.
        monkeypatch.setattr(settings, "query_databases", {"app": url})
        monkeypatch.setattr(settings, "database_url", POSTGRES_URL)
        assert "never queryable" in await _thread(
            lambda sql: tool.run(database="app", sql=sql), "select 1"
        )
    finally:
        await conn.execute(f"drop schema {schema} cascade")
        await conn.close()


async def _thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


# -- code_execution -----------------------------------------------------------------------

LIMITS = SandboxLimits(wall_seconds=2, cpu_seconds=2, memory_bytes=128 * 1024 * 1024)


def test_code_execution_out_of_cpu_time_is_timed_out_not_an_exit_code():
    """Its CPU limit stops a busy loop before the wall clock does: the run still ends as
    timed out (a busy machine decides which limit comes first)."""
    limits = SandboxLimits(wall_seconds=20, cpu_seconds=1, memory_bytes=128 * 1024 * 1024)
    result = run_python("while True: pass", limits)
    assert result.timed_out and result.exit_code is None, result
    assert result.seconds < 10
    assert "timed out" in result.as_text()


def test_code_execution_runs_python_and_keeps_it_in_its_box(tmp_path, monkeypatch):
    monkeypatch.setenv("KASAL_TEST_SECRET", "hunter2")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("top secret")

    ok = run_python("import statistics; print(statistics.mean([1, 2, 6]))", LIMITS)
    assert (ok.output.strip(), ok.exit_code) == ("3", 0)
    assert ok.network_isolated and ok.landlock, "this machine supports full isolation"

    probes = {
        "socket": "import socket; socket.create_connection(('127.0.0.1', 5432), timeout=1)",
        "env": "import os; print(os.environ.get('KASAL_TEST_SECRET', 'absent'))",
        "parent env": "import os; open(f'/proc/{os.getppid()}/environ', 'rb').read()",
        "file": f"print(open({str(secret_file)!r}).read())",
        "etc": "print(open('/etc/hostname').read())",
        "memory": "x = bytearray(512 * 1024 * 1024); print('allocated')",
        "subprocess": "import subprocess; subprocess.run(['id'])",
    }
    for name, code in probes.items():
        result = run_python(code, LIMITS)
        assert "hunter2" not in result.output and "top secret" not in result.output, name
        if name == "env":
            assert result.output.strip() == "absent"
        else:
            assert result.exit_code != 0, f"{name}: {result.output}"
            assert "Error" in result.output, f"{name}: {result.output}"
    assert "MemoryError" in run_python(probes["memory"], LIMITS).output

    forever = run_python("while True: pass", LIMITS)
    assert forever.timed_out and forever.seconds < 4
    flood = run_python("while True: print('x' * 1000)", LIMITS)
    assert flood.truncated and len(flood.output) <= 64 * 1024

    # Its own directory is writable and disappears afterwards.
    own = run_python("import os; open('f.txt', 'w').write('hi'); print(os.getcwd())", LIMITS)
    assert own.exit_code == 0 and not os.path.exists(own.output.strip())


def test_code_execution_tool_answers_with_output_and_ending(monkeypatch):
    monkeypatch.setattr(get_settings(), "code_execution_timeout", 2.0)
    assert CodeExecutionTool().run(code="print(6 * 7)") == "42\n\n[exit code 0]"


# -- files --------------------------------------------------------------------------------


def test_file_write_and_read_stay_in_the_files_dir(tmp_path, monkeypatch):
    settings = get_settings()
    monkeypatch.setattr(settings, "files_dir", tmp_path / "files")
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    writer, reader = FileWriteTool(), FileReadTool()
    assert writer.run(file_path="notes/a.txt", content="hello") == "wrote 5 bytes to notes/a.txt"
    assert reader.run(file_path="notes/a.txt") == "hello"
    assert "exists" in writer.run(file_path="notes/a.txt", content="again")
    assert "outside the files directory" in writer.run(file_path="../escape.txt", content="x")
    assert not (tmp_path / "escape.txt").exists()
    assert "outside" in reader.run(file_path="/etc/passwd")


def test_spec_arguments_are_refused_for_operator_configured_tools():
    from kasal.exceptions import InvalidSpecError

    with pytest.raises(InvalidSpecError):
        resolve_tools(["code_execution"], {"code_execution": {"memory": 10**12}})
