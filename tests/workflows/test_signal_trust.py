"""What a Temporal client can and cannot make a crew believe, and the journal's own failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from kasal import signing
from kasal.client import start_execution
from kasal.constants import EVENTS_SIGNAL
from kasal.db.engine import create_engine, session_factory
from kasal.db.journal import JournalStore
from kasal.execution import ActivityEventsInput, Event, EventType
from tests.helpers import FAST_RETRY, crew, offline_agent


def forged_batch(event_id: str, attempt: int = 1, tokens: int = 1_000_000) -> ActivityEventsInput:
    call = Event(
        type=EventType.LLM_CALL,
        timestamp=datetime.now(UTC),
        task="work",
        agent="analyst",
        attempt=attempt,
        event_id=event_id,
        data={"model": "x", "prompt_tokens": tokens, "completion_tokens": 0},
    )
    return ActivityEventsInput(task="work", attempt=attempt, events=[call], journal_key="work")


async def wait_for(handle, kind: EventType, **data):
    async for event in handle.events():
        if event.type == kind and all(event.data.get(k) == v for k, v in data.items()):
            return event
    raise AssertionError(f"no {kind} event")


async def test_a_client_cannot_forge_events_or_tokens(temporal_client, task_queue, worker):
    spec = crew(
        [{"name": "work", "description": "Think"}],
        agents=[offline_agent("offline/slow", latency_ms=1500)],
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    await wait_for(handle, EventType.TASK_STARTED)
    raw = temporal_client.get_workflow_handle(handle.workflow_id)
    unsigned = forged_batch("forged-unsigned")
    await raw.signal(EVENTS_SIGNAL, unsigned)
    wrong = forged_batch("forged-wrong-key")
    wrong.signature = "0" * 64
    await raw.signal(EVENTS_SIGNAL, wrong)
    # A signature made for another workflow (copied from its history) is no good here.
    elsewhere = forged_batch("forged-replayed")
    elsewhere.signature = signing.sign("kasal-exec-other", elsewhere.signed_body())
    await raw.signal(EVENTS_SIGNAL, elsewhere)
    result = await handle.result()
    assert result.token_usage.total_tokens < 100_000
    ids = {e.event_id for e in await handle.trace()}
    assert not ids & {"forged-unsigned", "forged-wrong-key", "forged-replayed"}


async def test_only_the_running_attempt_is_heard(temporal_client, task_queue, worker):
    """A signed batch from a superseded attempt is dropped; the running attempt's counts."""
    spec = crew(
        [{"name": "work", "description": "Think"}],
        agents=[offline_agent("offline/flaky", latency_ms=1500, fail_first=1)],
        retry=FAST_RETRY,
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    await wait_for(handle, EventType.TASK_STARTED, resumed=True)  # attempt 2 reported in
    raw = temporal_client.get_workflow_handle(handle.workflow_id)
    for event_id, attempt in [("stale-1", 1), ("current-2", 2)]:
        batch = forged_batch(event_id, attempt=attempt, tokens=3)
        batch.signature = signing.sign(handle.workflow_id, batch.signed_body())
        await raw.signal(EVENTS_SIGNAL, batch)
    await handle.result()
    ids = {e.event_id for e in await handle.trace()}
    assert "current-2" in ids, "a signed batch from the running attempt must count"
    assert "stale-1" not in ids


async def test_a_journal_that_cannot_be_written_fails_the_attempt_and_it_is_retried(
    temporal_client, task_queue, settings
):
    """No paid answer goes unjournaled: the attempt fails (retryably) rather than go on."""
    from workflows.worker import build_worker, prepare_database

    writes = {"failed": 0}

    class FlakyJournal(JournalStore):
        async def append(self, key, record):
            if record.seq >= 0 and writes["failed"] == 0:
                writes["failed"] += 1
                raise ConnectionError("database went away")
            await super().append(key, record)

    await prepare_database(settings)
    engine = create_engine(settings.resolved_database_url())
    sessions = session_factory(engine)
    worker = build_worker(
        temporal_client,
        task_queue,
        sessions,
        settings=settings,
        journal=FlakyJournal(sessions),
    )
    spec = crew([{"name": "work", "description": "Think"}], retry=FAST_RETRY)
    try:
        async with worker:
            handle = await start_execution(temporal_client, spec, task_queue=task_queue)
            result = await asyncio.wait_for(handle.result(), 60)
            events = [e async for e in handle.events()]
    finally:
        await engine.dispose()
    retrying = [e for e in events if e.type == EventType.TASK_RETRYING]
    assert [e.data["error_type"] for e in retrying] == ["journal_unavailable"]
    assert result.tasks[0].attempts == 2 and writes["failed"] == 1
    # The unjournaled answer of attempt 1 was never reported as spent.
    calls = [e for e in events if e.type == EventType.LLM_CALL]
    assert [e.attempt for e in calls] == [2]


async def test_a_superseded_attempt_stops_even_in_the_middle_of_a_call(
    temporal_client, task_queue, worker, llm_stub, settings
):
    """After a Temporal outage, the server may time an attempt out and start the next one
    while the first still runs: the first stops as soon as it learns, not at its next
    heartbeat rejection or LLM call."""
    from activities.journal import STALE_CHECK_EVERY
    from kasal.db.journal import AttemptKey
    from tests.fixtures.llm_stub import ModelBehaviour
    from tests.helpers import stub_agent

    llm_stub.behaviours["held"] = ModelBehaviour(block_at=1)
    spec = crew(
        [{"name": "work", "description": "Think"}],
        agents=[{**stub_agent("held", llm_stub.base_url), "tools": []}],
        retry=FAST_RETRY,
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    assert await asyncio.to_thread(llm_stub.blocked.wait, 30)
    run_id = (await temporal_client.get_workflow_handle(handle.workflow_id).describe()).run_id
    engine = create_engine(settings.resolved_database_url())
    try:
        # What attempt 2 starting on another worker writes first.
        await JournalStore(session_factory(engine)).begin(
            AttemptKey(handle.workflow_id, run_id or "", "work", 2)
        )
    finally:
        await engine.dispose()
    marked = asyncio.get_running_loop().time()
    # The held attempt gave up (its call abandoned): Temporal runs the next one.
    await asyncio.wait_for(wait_for(handle, EventType.TASK_STARTED, resumed=True), 30)
    assert asyncio.get_running_loop().time() - marked < STALE_CHECK_EVERY + 2
    llm_stub.release.set()
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.tasks[0].attempts == 2
