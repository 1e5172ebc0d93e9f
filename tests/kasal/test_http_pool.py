"""Provider connections in small pools: a burst spreads over them, the next burst reuses
every connection, and a request's slot comes back however it ends (real HTTP server)."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from kasal.http_pool import ShardedTransport


class _Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a provider's server does

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.ports.add(self.client_address[1])  # type: ignore[attr-defined]
        gate = getattr(self.server, "gate", None)
        if gate is None:
            time.sleep(0.3)
        else:  # a burst: nobody is answered before all of it has arrived
            gate.wait(10)
        body = b"x" * 100_000 if self.path == "/big" else b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    # A burst's connections all wait to be accepted, as at a provider (the default backlog
    # is 5).
    request_queue_size = 128
    daemon_threads = True
    #: Set for a burst: each request is answered once all of the burst's have arrived.
    gate: threading.Barrier | None = None


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = _Server(("127.0.0.1", 0), _Slow)
    srv.ports = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: http.server.ThreadingHTTPServer, path: str = "/") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_a_burst_spreads_over_small_pools_and_the_next_reuses_their_connections(server):
    # 40 in flight at once however slowly this machine starts them: a pool that queued a
    # request instead (more than 8 in one) would hold it past the gate, which then breaks.
    server.gate = threading.Barrier(40)
    transport = ShardedTransport(per_shard=8)
    with httpx.Client(transport=transport) as client, ThreadPoolExecutor(40) as pool:

        def burst() -> list[int]:
            return list(pool.map(lambda _: client.get(_url(server)).status_code, range(40)))

        assert burst() == [200] * 40
        assert transport.shards == 5  # 40 at once, at most 8 in any pool
        assert len(server.ports) == 40
        assert burst() == [200] * 40
        # Every connection stayed open for the next burst: none opened, none closed.
        assert len(server.ports) == 40
        assert transport.shards == 5


def test_pools_left_idle_are_closed_but_the_last_used(server):
    transport = ShardedTransport(per_shard=1, idle_seconds=0.0)
    with httpx.Client(transport=transport) as client, ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda _: client.get(_url(server)).status_code, range(3))) == [200] * 3
        assert transport.shards == 3
        time.sleep(1.1)  # pools are looked at once a second at most
        assert client.get(_url(server)).status_code == 200
        assert transport.shards == 1
        assert len(server.ports) == 3  # the pool kept answered on its open connection


def test_a_request_gives_its_slot_back_however_it_ends(server):
    transport = ShardedTransport(per_shard=1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"  # nobody listens there
    with httpx.Client(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(closed)
        # A body streamed in part, then closed.
        with client.stream("GET", _url(server, "/big")) as response:
            next(response.iter_bytes())
        assert client.get(_url(server)).status_code == 200
        # One pool all along: each request had given its only slot back.
        assert transport.shards == 1
    with pytest.raises(RuntimeError, match="closed"):
        transport.handle_request(httpx.Request("GET", _url(server)))


def test_the_workers_provider_client_pools_its_connections_so(llm_stub, monkeypatch):
    """The OpenAI client a worker's tasks share is built on it, and answers through it."""
    from kasal.llm import build_llm
    from kasal.settings import get_settings
    from kasal.spec import LLMSpec

    monkeypatch.setattr(get_settings(), "llm_base_urls", ["http://127.0.0.1:"])
    llm = build_llm(LLMSpec(model="compatible/pooled", base_url=llm_stub.base_url))
    assert isinstance(llm._client._client._transport, ShardedTransport)
    answer = llm.call([{"role": "user", "content": "Current Task: say hi"}])
    assert "Final Answer" in answer
    assert len(llm_stub.requests_for("pooled")) == 1


async def test_the_async_transport_spreads_reuses_and_frees_a_cancelled_requests_slot(server):
    """The pools a worker's awaited provider calls share behave as the sync ones do, and a
    call cancelled mid-request (a stopped attempt) gives its slot back."""
    import asyncio

    from kasal.http_pool import AsyncShardedTransport

    server.gate = threading.Barrier(40)
    transport = AsyncShardedTransport(per_shard=8)
    async with httpx.AsyncClient(transport=transport) as client:

        async def burst() -> list[int]:
            answers = await asyncio.gather(*(client.get(_url(server)) for _ in range(40)))
            return [a.status_code for a in answers]

        assert await burst() == [200] * 40
        assert transport.shards == 5
        assert len(server.ports) == 40
        assert await burst() == [200] * 40
        assert len(server.ports) == 40 and transport.shards == 5

        server.gate = None  # each answered after 0.3 s
        calls = [asyncio.create_task(client.get(_url(server))) for _ in range(8)]
        await asyncio.sleep(0.1)  # all 8 are waiting on the server
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        # Every slot came back: 40 more fit in the 5 pools there are.
        server.gate = threading.Barrier(40)
        assert await burst() == [200] * 40
        assert transport.shards == 5
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", _url(server)))


def test_the_async_client_is_shared_per_loop_and_built_outside_one_too(llm_stub, monkeypatch):
    """Kasal's provider class shares its async client on a loop (the provider loop), and
    still gives CrewAI one when asked outside any loop (its file uploader does)."""
    import asyncio

    from kasal.http_pool import AsyncShardedTransport
    from kasal.llm import build_llm
    from kasal.settings import get_settings
    from kasal.spec import LLMSpec

    monkeypatch.setattr(get_settings(), "llm_base_urls", ["http://127.0.0.1:"])
    spec = LLMSpec(model="compatible/shared", base_url=llm_stub.base_url)
    first, second = build_llm(spec), build_llm(spec)

    async def clients() -> tuple[object, object]:
        return first._get_async_client(), second._get_async_client()

    a, b = asyncio.run(clients())
    assert a is b and isinstance(a._client._transport, AsyncShardedTransport)
    own = build_llm(spec)._get_async_client()  # no loop runs here
    assert own is not a and not isinstance(own._client._transport, AsyncShardedTransport)


async def test_async_pools_left_idle_are_closed_but_the_last_used(server):
    import asyncio

    from kasal.http_pool import AsyncShardedTransport

    transport = AsyncShardedTransport(per_shard=1, idle_seconds=0.0)
    async with httpx.AsyncClient(transport=transport) as client:
        answers = await asyncio.gather(*(client.get(_url(server)) for _ in range(3)))
        assert [a.status_code for a in answers] == [200] * 3
        assert transport.shards == 3
        pools = [s.transport for s in transport._shards]
        await asyncio.sleep(1.1)  # pools are looked at once a second at most
        assert (await client.get(_url(server))).status_code == 200
        assert transport.shards == 1
        assert len(server.ports) == 3  # the pool kept answered on its open connection
        # The two dropped pools closed their connections; the kept one still has its own.
        open_connections = sorted(len(pool._pool.connections) for pool in pools)
        assert open_connections == [0, 0, 1]
