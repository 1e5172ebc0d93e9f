"""HTTP connections to a provider, shared by a thousand calls in flight at a bounded cost.

A worker's provider calls share one OpenAI client (building one costs ~26 ms). Its httpx
transport keeps every connection in one httpcore pool, and that pool walks all of its
connections at every request and every response, once more for each idle one (a known
quadratic pass, encode/httpcore#1035, unmerged in httpcore 1.0.9). Measured with
``bench/provider_pool.py`` (one client, N calls at once against a local server):

- at 200 calls, 4.9-6.4 ms of the caller's CPU per call, a quarter of it in that walk;
- the pool closed each connection that went idle while more than its keep-alive limit (100)
  were open, so most calls opened a new one: 245-300 connections per 600 calls;
- at 1,000 calls, a pass sometimes closed a connection another thread had just been handed
  (encode/httpcore#1110): that call failed, or hung until its read timeout (600 s).

:class:`ShardedTransport` keeps several small pools instead. Each request goes to the pool
used last that has room, and a new pool opens when all are full. No pool holds more
connections or requests than ``per_shard``, and it keeps every connection it opened alive, so
each walk is short, no request waits in a pool's queue, and no pass closes a connection to
make room. A pool idle for a minute is closed. Same runs: 3.2-3.5 ms per call at 200 and no
connection opened after the first burst; 3.8-4.0 ms at 1,000, nothing failed or hung.

:class:`AsyncShardedTransport` is the same for the async client whose calls a worker awaits on
the event loop it keeps for them (httpcore's async pool makes the same walk).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

#: Requests (and so connections) one pool holds at most.
PER_SHARD = 16
#: The same for async pools, whose walk costs more per connection: httpcore asks each one
#: whether it expired through anyio's typed attributes. ``bench/provider_pool.py``, calls
#: awaited on one loop: 4.2-4.5 ms of CPU per call at 200 in flight with pools of 16,
#: 2.7-3.2 with pools of 4 (1,000 in flight: 4.2-4.7 -> 3.2-4.4); 1 and 2 measured as 4.
ASYNC_PER_SHARD = 4
#: A pool left with nothing in flight this long is closed, its connections with it (the
#: pool used last is kept): a burst's pools do not hold their sockets for ever.
IDLE_SECONDS = 60.0


class _Shard:
    __slots__ = ("idle_since", "in_flight", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.in_flight = 0
        self.idle_since = time.monotonic()


class _Released(httpx.SyncByteStream):
    """A response body that gives its shard's slot back once, when closed."""

    def __init__(self, stream: httpx.SyncByteStream, release: Any) -> None:
        self._stream = stream
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _AsyncReleased(httpx.AsyncByteStream):
    """:class:`_Released` for an async response body."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Any) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _Shards:
    """The bookkeeping of small pools, for a sync or an async transport."""

    default_per_shard = PER_SHARD

    def __init__(
        self,
        per_shard: int | None = None,
        verify: ssl.SSLContext | bool = True,
        idle_seconds: float = IDLE_SECONDS,
        **transport_options: Any,
    ) -> None:
        per_shard = self.default_per_shard if per_shard is None else per_shard
        if per_shard < 1:
            raise ValueError("per_shard must be at least 1")
        self.per_shard = per_shard
        self.idle_seconds = idle_seconds
        # What httpx would build for ``verify`` (certifi's bundle, or SSL_CERT_FILE/DIR), once.
        self._verify = httpx.create_ssl_context(verify=verify)
        self._options = transport_options
        self._shards: list[_Shard] = []
        #: Pools with room for another request (the last one is used first).
        self._open: list[_Shard] = []
        self._lock = threading.Lock()
        self._closed = False
        self._swept = time.monotonic()

    @property
    def shards(self) -> int:
        """How many pools there are now."""
        return len(self._shards)

    def _new_pool(self, limits: httpx.Limits) -> Any:
        raise NotImplementedError

    def _take(self) -> tuple[_Shard, list[_Shard]]:
        """A pool for one more request, and the idle pools taken out (the caller closes
        them, outside the lock)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the transport is closed")
            idle = self._idle_pools()
            if self._open:
                shard = self._open[-1]  # the pool used last: its connections are warm
            else:
                limits = httpx.Limits(
                    max_connections=self.per_shard, max_keepalive_connections=self.per_shard
                )
                shard = _Shard(self._new_pool(limits))
                self._shards.append(shard)
                self._open.append(shard)
            shard.in_flight += 1
            if shard.in_flight == self.per_shard:
                self._open.pop()
        return shard, idle

    def _idle_pools(self) -> list[_Shard]:
        """Pools idle past ``idle_seconds`` (looked for at most once a second), taken out."""
        now = time.monotonic()
        if now - self._swept < 1.0:
            return []
        self._swept = now
        last = self._open[-1] if self._open else None
        idle = [
            s
            for s in self._shards
            if s.in_flight == 0 and s is not last and now - s.idle_since > self.idle_seconds
        ]
        if idle:
            self._shards = [s for s in self._shards if s not in idle]
            self._open = [s for s in self._open if s not in idle]
        return idle

    def _give_back(self, shard: _Shard) -> None:
        with self._lock:
            if shard.in_flight == self.per_shard and not self._closed:
                self._open.append(shard)
            shard.in_flight -= 1
            if shard.in_flight == 0:
                shard.idle_since = time.monotonic()

    def _close_all(self) -> list[_Shard]:
        with self._lock:
            self._closed = True
            shards, self._shards, self._open = self._shards, [], []
        return shards


class ShardedTransport(_Shards, httpx.BaseTransport):
    """An httpx transport over small connection pools (see the module docstring).

    ``transport_options`` go to each pool's :class:`httpx.HTTPTransport` (``retries``,
    ``http2``...); ``verify`` becomes one SSL context that every pool shares, so a new pool
    does not load the CA bundle again.
    """

    def _new_pool(self, limits: httpx.Limits) -> httpx.HTTPTransport:
        return httpx.HTTPTransport(verify=self._verify, limits=limits, **self._options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        shard, idle = self._take()
        for pool in idle:
            pool.transport.close()
        try:
            response = shard.transport.handle_request(request)
        except BaseException:
            self._give_back(shard)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Released(response.stream, lambda: self._give_back(shard))
        return response

    def close(self) -> None:
        for shard in self._close_all():
            shard.transport.close()


class AsyncShardedTransport(_Shards, httpx.AsyncBaseTransport):
    """:class:`ShardedTransport` for an async client: the provider calls a worker awaits on
    the event loop it keeps for them share it (its pools belong to that loop). Its pools are smaller
    (:data:`ASYNC_PER_SHARD`)."""

    default_per_shard = ASYNC_PER_SHARD

    def _new_pool(self, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(verify=self._verify, limits=limits, **self._options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard, idle = self._take()
        for pool in idle:
            await pool.transport.aclose()
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:  # a cancelled call too: its slot is free again
            self._give_back(shard)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _AsyncReleased(response.stream, lambda: self._give_back(shard))
        return response

    async def aclose(self) -> None:
        for shard in self._close_all():
            await shard.transport.aclose()
