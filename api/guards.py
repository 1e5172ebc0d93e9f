"""Request guards: a body-size limit (ASGI middleware) and rate limits (``limits``)."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import RateLimitedError, error_response

log = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Answer 413 to request bodies larger than ``max_bytes``, before any route sees them.

    Both a too-large ``Content-Length`` and a chunked body that grows past the limit are
    refused; an accepted body is handed on unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_bytes} bytes",
            {"max_bytes": self.max_bytes},
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def limiter_storage(redis_url: str = "", prefix: str = "kasal") -> Storage:
    """Where rate-limit counts live: Redis when ``redis_url`` is set, so every API replica
    counts against one limit; this process's memory otherwise."""
    if not redis_url:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
    return RedisStorage(uri, implementation="redispy", key_prefix=prefix)


class RateLimiter:
    """A moving-window limit such as ``10/minute`` per key (client address, user, group,
    API key), counted in ``storage`` (see :func:`limiter_storage`).

    If the storage cannot be reached (Redis down) requests pass and a warning is logged:
    an outage of the limiter must not become an outage of the API.
    """

    def __init__(self, spec: str, name: str, storage: Storage | None = None) -> None:
        self.item: RateLimitItem = parse(spec)
        self.name = name
        self.storage = storage or MemoryStorage()
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, key: str) -> None:
        """Count one request for ``key``; :class:`RateLimitedError` once over the limit."""
        try:
            if await self.limiter.hit(self.item, self.name, key):
                return
        except Exception as exc:
            log.warning("rate limit %s not checked (%s): request allowed", self.name, exc)
            return
        raise await self._limited(key)

    async def check(self, key: str) -> None:
        """:class:`RateLimitedError` if ``key`` is over the limit now; counts nothing."""
        try:
            if await self.limiter.test(self.item, self.name, key):
                return
        except Exception as exc:
            log.warning("rate limit %s not checked (%s): request allowed", self.name, exc)
            return
        raise await self._limited(key)

    async def count(self, key: str) -> None:
        """Count one event for ``key`` without refusing anything (e.g. a failed login)."""
        try:
            await self.limiter.hit(self.item, self.name, key)
        except Exception as exc:
            log.warning("rate limit %s not counted (%s)", self.name, exc)

    async def reset(self, key: str) -> None:
        """Forget ``key``'s count (e.g. after a successful login)."""
        try:
            await self.limiter.clear(self.item, self.name, key)
        except Exception as exc:
            log.warning("rate limit %s not reset (%s)", self.name, exc)

    async def _limited(self, key: str) -> RateLimitedError:
        stats = await self.limiter.get_window_stats(self.item, self.name, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimitedError(
            f"too many {self.name} requests: the limit is {self.item}; retry in {retry_after}s",
            retry_after=retry_after,
        )
