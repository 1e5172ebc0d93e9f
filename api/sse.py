"""Server-Sent Events: an execution's events over plain HTTP, through the same relay as the
WebSocket (one upstream subscription per execution per process).

Each event is one SSE message: ``id`` is its offset, ``event`` its wire type, ``data`` the
same JSON as a WebSocket event frame. A client that reconnects sends ``Last-Event-ID`` (the
last offset it received; browsers' ``EventSource`` do it themselves) and gets everything
after it, once. Comment lines (``: heartbeat``) keep idle connections open through proxies.
When the execution has ended and every event was sent: ``event: stream_end`` with
``{"next_offset": n}``, and the response ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.errors import error_body
from api.relay import Relay, SlowClientError
from api.schemas import wire_event
from kasal.db.repositories import TraceRepository

#: Tells EventSource clients how long to wait before reconnecting (milliseconds).
RETRY_MS = 2000
_END = object()


def resume_offset(last_event_id: str | None, from_offset: int | None) -> int:
    """Where to start: after ``Last-Event-ID`` if given, else ``from_offset``, else 0."""
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id.strip()) + 1
    return from_offset or 0


def message(text: str, *, event: str | None = None, event_id: int | None = None) -> str:
    """One SSE message (``data`` lines never hold a raw newline: JSON has none)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {text}")
    return "\n".join(lines) + "\n\n"


async def event_stream(
    relay: Relay,
    sessions: async_sessionmaker[AsyncSession],
    execution_id: str,
    start: int,
    *,
    stored: bool,
    heartbeat: float,
) -> AsyncIterator[str]:
    """The SSE body from offset ``start``: stored events of a recorded execution, or the
    relay's live channel; heartbeats while nothing happens; ``stream_end`` last."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=relay.max_lag)

    async def send(text: str) -> None:
        try:
            await asyncio.wait_for(queue.put(text), relay.send_timeout)
        except TimeoutError:
            raise SlowClientError("the client stopped reading") from None

    async def produce() -> None:
        end: dict[str, Any]
        try:
            if stored:
                offset = start
                while True:
                    async with sessions() as session:
                        page = await TraceRepository(session).page(
                            execution_id, offset=offset, limit=500
                        )
                    for event in page:
                        await send(wire_event(execution_id, event).model_dump_json())
                        offset = (event.offset or 0) + 1
                    if len(page) < 500:
                        break
                end = {"next_offset": max(offset, start)}
            else:
                channel = await relay.subscribe(execution_id, start, send)
                end = {"next_offset": max(len(channel.messages), start)}
                if channel.error:
                    end.update(error_body("stream_unavailable", channel.error))
        except SlowClientError as exc:
            end = error_body("slow_client", str(exc))
        await queue.put((_END, end))

    producer = asyncio.create_task(produce())
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if isinstance(item, tuple) and item[0] is _END:
                yield message(json.dumps(item[1]), event="stream_end")
                return
            frame = json.loads(item)
            yield message(item, event=frame["type"], event_id=frame["offset"])
    finally:
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer
