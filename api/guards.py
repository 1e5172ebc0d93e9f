"""Request guards: a body-size limit (ASGI middleware) and rate limits (``limits``)."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import RateLimitedError, error_response


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


class RateLimiter:
    """A moving-window limit such as ``10/minute`` per key (client address or user id).

    Counts live in this process's memory: with several API replicas each enforces the
    limit on its own (``limits`` also offers Redis storage when that matters).
    """

    def __init__(self, spec: str, name: str) -> None:
        self.item: RateLimitItem = parse(spec)
        self.name = name
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, key: str) -> None:
        """Count one request for ``key``; :class:`RateLimitedError` once over the limit."""
        if await self.limiter.hit(self.item, self.name, key):
            return
        stats = await self.limiter.get_window_stats(self.item, self.name, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimitedError(
            f"too many {self.name} requests: the limit is {self.item}; retry in {retry_after}s",
            retry_after=retry_after,
        )
