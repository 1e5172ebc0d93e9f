"""Admission: how many activity tasks a worker takes from Temporal, by what they are doing.

A task attempt mostly waits on its provider (I/O: a thousand cost nothing while they
wait), but it also computes: CrewAI's own code before and after each call, a few at a time
(:class:`~activities.journal.ComputeSlots`). With a fixed number of activity slots, a
burst of crews had every attempt started at once: hundreds queued for the interpreter,
each one "running" for Temporal and heartbeating while it waited its turn (server writes,
threads fighting over the GIL). Measured with 1,000 crews starting at once
(``bench/load.py``): the worker spent 77 ms of CPU per task, the server 48 ms.

:class:`ActivityAdmission` is a Temporal slot supplier (the SDK's own admission control:
the worker polls for a task only with a slot in hand). It hands out a slot while fewer than
``backlog`` crew attempts are computing or waiting to compute; attempts waiting on a
provider or a tool do not count, so I/O-bound crews still fill up to ``maximum`` slots.
Tasks past the backlog wait in Temporal's task queue, where waiting costs nothing and any
other worker may take them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from temporalio.worker import (
    ActivitySlotInfo,
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)

from activities.journal import ComputeSlots
from activities.models import MANAGER_STEP, PLAN_CREW, RUN_TASK

#: The activities whose attempts run CrewAI (and so take compute slots).
CREW_ACTIVITIES = frozenset({RUN_TASK, MANAGER_STEP, PLAN_CREW})
RECHECK_SECONDS = 1.0


class _Permit(SlotPermit):
    other = False  # used by an activity that runs no CrewAI


class ActivityAdmission(CustomSlotSupplier):
    """Activity slots: at most ``maximum`` in use, and a new one only while fewer than
    ``backlog`` crew attempts are busy (``backlog`` 0: no such limit)."""

    def __init__(self, maximum: int, backlog: int, slots: ComputeSlots) -> None:
        self.maximum = maximum
        self.backlog = backlog
        self._slots = slots
        self._lock = threading.Lock()
        self._reserved = 0
        self._other = 0
        self._waiters = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        slots.on_wait = self._wake

    @property
    def busy(self) -> int:
        """Slots that are, or may any moment become, crew attempts computing or waiting for
        a compute slot: every slot handed out, but those of attempts waiting on a provider
        or a tool and those other activities use (a slot reserved for a poll counts: the
        poll may bring a crew task)."""
        return max(0, self._reserved - self._other - self._slots.waiting)

    def _admit(self) -> _Permit | None:
        with self._lock:
            if self._reserved >= self.maximum:
                return None
            if self.backlog > 0 and self.busy >= self.backlog:
                return None
            self._reserved += 1
            return _Permit()

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        if self._changed is None:
            self._loop = asyncio.get_running_loop()
            self._changed = asyncio.Event()
        self._waiters += 1  # before looking: a change from now on wakes this reservation
        try:
            while True:
                self._changed.clear()
                permit = self._admit()
                if permit is not None:
                    return permit
                # Woken by every change; the timeout only bounds the cost of a missed one.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), RECHECK_SECONDS)
        finally:
            self._waiters -= 1

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        return self._admit()

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        info = ctx.slot_info
        if isinstance(info, ActivitySlotInfo) and info.activity_type in CREW_ACTIVITIES:
            return
        if isinstance(ctx.permit, _Permit):
            ctx.permit.other = True
            with self._lock:
                self._other += 1
        self._wake()

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        with self._lock:
            self._reserved -= 1
            if isinstance(ctx.permit, _Permit) and ctx.permit.other:
                self._other -= 1
        self._wake()

    def _wake(self) -> None:
        """Something freed room: let a waiting reservation look again (from any thread)."""
        if self._waiters and self._loop is not None and self._changed is not None:
            with contextlib.suppress(RuntimeError):  # the worker's loop has closed
                self._loop.call_soon_threadsafe(self._changed.set)
