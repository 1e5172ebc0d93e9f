"""Admission: a worker takes new tasks while few of its attempts compute; attempts waiting on
providers do not count (a real ComputeSlots, the SDK's slot-supplier calls made by hand, and
a real worker)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from activities.admission import ActivityAdmission
from activities.journal import ComputeSlots
from kasal.client import start_execution
from tests.activities.test_journal import observer_for, store  # noqa: F401 - the fixture
from tests.helpers import crew, offline_agent
from workflows.worker import running_worker

RESERVE = SimpleNamespace(slot_type="activity", task_queue="q", is_sticky=False)


def used(permit, activity_type: str = "run_task") -> SimpleNamespace:
    return SimpleNamespace(slot_info=SimpleNamespace(activity_type=activity_type), permit=permit)


async def test_new_tasks_wait_while_the_backlog_computes_not_while_it_waits_on_providers(store):  # noqa: F811
    slots = ComputeSlots(1)
    admission = ActivityAdmission(maximum=10, backlog=2, slots=slots)
    first = await admission.reserve_slot(RESERVE)
    assert admission.busy == 1  # reserved for a poll: it may bring a crew task
    admission.mark_slot_used(used(first))
    second = await admission.reserve_slot(RESERVE)
    admission.mark_slot_used(used(second))
    assert admission.busy == 2
    assert admission.try_reserve_slot(RESERVE) is None  # eager tasks are refused too
    third = asyncio.ensure_future(admission.reserve_slot(RESERVE))
    await asyncio.sleep(0.2)
    assert not third.done(), "a third attempt was let in while two compute"

    # The first attempt starts waiting on its provider: it computes nothing, room is made.
    observer, _ = await observer_for(store)
    holder = slots.holder(observer)
    waiting = holder.waiting()
    await asyncio.to_thread(waiting.__enter__)
    permit = await asyncio.wait_for(third, 0.5)  # woken, not found by a later recheck
    assert admission.busy == 2  # handed out: it may bring a crew task
    admission.mark_slot_used(used(permit, "deliver_webhook"))  # not CrewAI: not counted
    assert admission.busy == 1
    await asyncio.to_thread(waiting.__exit__, None, None, None)  # back from the provider
    assert admission.busy == 2
    assert admission.try_reserve_slot(RESERVE) is None
    admission.release_slot(SimpleNamespace(slot_info=None, permit=first))
    assert admission.busy == 1
    fourth = admission.try_reserve_slot(RESERVE)
    assert fourth is not None
    admission.mark_slot_used(used(fourth))
    assert admission.try_reserve_slot(RESERVE) is None


async def test_at_most_the_maximum_slots_and_no_backlog_limit_at_zero(store):  # noqa: F811
    admission = ActivityAdmission(maximum=3, backlog=0, slots=ComputeSlots(1))
    permits = [admission.try_reserve_slot(RESERVE) for _ in range(3)]
    for permit in permits:
        admission.mark_slot_used(used(permit))
    assert all(permits) and admission.busy == 3
    assert admission.try_reserve_slot(RESERVE) is None
    blocked = asyncio.ensure_future(admission.reserve_slot(RESERVE))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    admission.release_slot(SimpleNamespace(slot_info=None, permit=permits[0]))
    assert await asyncio.wait_for(blocked, 0.5) is not None


async def test_with_a_backlog_of_one_every_crew_still_waits_on_its_provider_at_once(
    temporal_client, task_queue, settings
):
    """One attempt may compute at a time, yet eight crews whose calls take 2 s each finish
    together: waiting on a provider takes no room."""
    tight = settings.model_copy(update={"compute_backlog": 1, "compute_slots": 1})
    slow = offline_agent("offline/slow", latency_ms=2000)
    spec = crew([{"name": "t0", "description": "Step"}], agents=[slow])
    async with running_worker(temporal_client, task_queue, tight):
        began = time.monotonic()
        handles = [
            await start_execution(temporal_client, spec, task_queue=task_queue) for _ in range(8)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
        took = time.monotonic() - began
    assert all(len(r.tasks) == 1 and not r.stopped for r in results)
    assert took < 10, f"the calls waited one after another ({took:.1f} s; 8 x 2 s serial)"
