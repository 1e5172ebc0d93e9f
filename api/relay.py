"""The WebSocket relay: one upstream subscription per execution per process, many clients.

A :class:`Channel` follows one execution's event stream (``ExecutionHandle.events``) and
keeps every event it has seen, serialised once, at its offset. Each client subscription is
a cursor into that list: it replays from the offset it asked for, then follows live, so a
reconnecting client gets every missed event once, in order. Clients never slow the
channel or each other: each sends at its own pace, and one that falls too far behind or
whose socket stops taking data is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.schemas import wire_event
from api.temporal import TemporalConnection
from kasal.client import ExecutionHandle
from kasal.db.repositories import TraceRepository
from kasal.execution import Event

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]


class SlowClientError(Exception):
    """A client fell too far behind, or its socket stopped taking data."""


class Channel:
    """One execution's events, followed upstream once and shared by every subscriber."""

    def __init__(self, relay: Relay, execution_id: str) -> None:
        self.relay = relay
        self.execution_id = execution_id
        #: Wire JSON of every event seen, at its offset.
        self.messages: list[str] = []
        #: Monotonic time each message arrived from upstream (for measurements).
        self.arrived: list[float] = []
        self.ended = False
        self.error: str | None = None
        self.subscribers = 0
        self._signal = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle_close: asyncio.TimerHandle | None = None

    # -- upstream -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin following the execution."""
        self._task = asyncio.create_task(self._follow(), name=f"relay-{self.execution_id}")

    async def _follow(self) -> None:
        failures = 0
        while not self.ended:
            try:
                client = await self.relay.temporal.get()
                handle = ExecutionHandle(client, self.execution_id)
                async for event in handle.events(
                    from_offset=len(self.messages), poll_cooldown=self.relay.poll_cooldown
                ):
                    failures = 0
                    self.publish(event)
                self._end()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.info(
                    "relay upstream of %s failed (%s, attempt %d)",
                    self.execution_id,
                    type(exc).__name__,
                    failures,
                )
                # A finished execution whose workflow can no longer answer (no worker, or
                # past retention): its stored trace has the rest.
                if await self._from_database():
                    return
                if failures >= self.relay.max_upstream_failures:
                    self._end(error="the execution's event stream is unavailable")
                    return
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))

    async def _from_database(self) -> bool:
        async with self.relay.sessions() as session:
            from kasal.db.models import Execution

            execution = await session.get(Execution, self.execution_id)
            if execution is None or execution.status_detail is None:
                return False
            repo = TraceRepository(session)
            while True:
                page = await repo.page(self.execution_id, offset=len(self.messages), limit=500)
                for event in page:
                    self.publish(event)
                if len(page) < 500:
                    break
        self._end()
        return True

    def publish(self, event: Event) -> None:
        """Add the next event and wake every subscriber."""
        offset = event.offset if event.offset is not None else len(self.messages)
        if offset != len(self.messages):
            if offset < len(self.messages):
                return  # seen already (an upstream re-subscribed from an older offset)
            log.warning(
                "relay of %s: offset %d after %d", self.execution_id, offset, len(self.messages)
            )
        event.offset = len(self.messages)
        self.messages.append(wire_event(self.execution_id, event).model_dump_json())
        self.arrived.append(time.monotonic())
        self._wake()

    def _end(self, error: str | None = None) -> None:
        self.ended = True
        self.error = error
        self._wake()

    def _wake(self) -> None:
        signal, self._signal = self._signal, asyncio.Event()
        signal.set()

    # -- subscribers ----------------------------------------------------------------------

    async def stream(self, from_offset: int, send: Send) -> None:
        """Send every event from ``from_offset`` on, live, until the stream ends.

        Raises :class:`SlowClientError` if the client lags more than the relay allows.
        """
        cursor = from_offset
        # A resuming client may start far behind: only falling further behind than that
        # backlog (shrinking as it is sent) plus the allowed lag counts as slow.
        backlog = max(0, len(self.messages) - from_offset)
        while True:
            signal = self._signal
            while cursor < len(self.messages):
                allowed = self.relay.max_lag + max(0, backlog - (cursor - from_offset))
                if len(self.messages) - cursor > allowed and not self.ended:
                    raise SlowClientError(f"more than {self.relay.max_lag} events behind")
                await send(self.messages[cursor])
                cursor += 1
            if self.ended:
                return
            await signal.wait()

    def acquire(self) -> None:
        """Count a subscriber in."""
        self.subscribers += 1
        if self._idle_close is not None:
            self._idle_close.cancel()
            self._idle_close = None

    def release(self) -> None:
        """Count a subscriber out; an unwatched channel closes after a grace period.

        The grace period lets a client that lost its connection resume from memory.
        """
        self.subscribers -= 1
        if self.subscribers <= 0:
            loop = asyncio.get_running_loop()
            self._idle_close = loop.call_later(self.relay.idle_grace, self.close)

    def close(self) -> None:
        """Stop following and forget the events."""
        if self._task is not None:
            self._task.cancel()
        if self.relay.channels.get(self.execution_id) is self:
            del self.relay.channels[self.execution_id]


class Relay:
    """Every channel of this API process."""

    def __init__(
        self,
        temporal: TemporalConnection,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_lag: int = 10_000,
        send_timeout: float = 10.0,
        idle_grace: float = 30.0,
        poll_cooldown: float = 0.02,
        max_upstream_failures: int = 5,
    ) -> None:
        self.temporal = temporal
        self.sessions = sessions
        self.max_lag = max_lag
        self.send_timeout = send_timeout
        self.idle_grace = idle_grace
        self.poll_cooldown = poll_cooldown
        self.max_upstream_failures = max_upstream_failures
        self.channels: dict[str, Channel] = {}

    def channel(self, execution_id: str) -> Channel:
        """The channel of an execution, started on first use."""
        channel = self.channels.get(execution_id)
        if channel is None:
            channel = Channel(self, execution_id)
            self.channels[execution_id] = channel
            channel.start()
        return channel

    async def subscribe(self, execution_id: str, from_offset: int, send: Send) -> Channel:
        """Stream an execution's events to ``send`` from ``from_offset`` until it ends."""
        channel = self.channel(execution_id)
        channel.acquire()
        try:
            await channel.stream(from_offset, send)
        finally:
            channel.release()
        return channel

    async def close(self) -> None:
        """Stop every channel."""
        tasks = [c._task for c in self.channels.values() if c._task is not None]
        for channel in list(self.channels.values()):
            channel.close()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def stats(self) -> dict[str, Any]:
        """Channel and subscriber counts."""
        return {
            "channels": len(self.channels),
            "subscribers": sum(c.subscribers for c in self.channels.values()),
        }
