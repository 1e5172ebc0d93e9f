"""The observer of one task attempt: replay, journal, staleness, cancellation, events.

CrewAI calls the observer from its own thread; these tests do the same, against a real
SQLite journal, with the events the observer publishes captured as signed batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.journal import (
    AttemptWatch,
    ComputeSlots,
    JournalUnavailable,
    LLMCallRecord,
    Publisher,
    StaleAttempt,
    TaskCancelled,
    TaskObserver,
    prompt_hash,
    run_observed,
)
from kasal import signing
from kasal.db.engine import create_engine, session_factory
from kasal.db.journal import AttemptKey, JournalStore
from kasal.db.migrate import migrate
from kasal.execution import ActivityEventsInput, JournalRecord

MESSAGES = [{"role": "user", "content": "What is 6 x 7?"}]


@pytest.fixture
async def store(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'journal.db'}")
    await migrate(engine)
    try:
        yield JournalStore(session_factory(engine))
    finally:
        await engine.dispose()


class Sent:
    """The batches a publisher delivered."""

    def __init__(self) -> None:
        self.batches: list[ActivityEventsInput] = []

    async def __call__(self, batch: ActivityEventsInput) -> None:
        self.batches.append(batch)

    @property
    def events(self):
        return [e for b in self.batches for e in b.events]


async def observer_for(store, attempt=1, journal=None) -> tuple[TaskObserver, Sent]:
    signing.configure("test-secret")
    sent = Sent()
    key = AttemptKey("wf-1", "run-1", "task", attempt)
    journal = await store.begin(key) if journal is None else journal
    publisher = Publisher(
        asyncio.get_running_loop(),
        sent,
        workflow_id="wf-1",
        task="task",
        activity_id="task",
        attempt=attempt,
    )
    return TaskObserver(publisher, "agent", store, key, journal), sent


def paid(response: str) -> LLMCallRecord:
    return LLMCallRecord("m", 10, 5, 12.0, response)


async def in_thread(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def test_a_paid_call_is_journaled_before_crewai_goes_on_and_replayed_by_the_retry(store):
    first, sent = await observer_for(store)
    assert await in_thread(first.before_call, MESSAGES) is None
    await in_thread(first.after_call, paid("42"), MESSAGES)
    sent.batches.append(first.publisher.batch(await first.publisher.close()))
    # Durable already: the next attempt replays it without asking the provider.
    second, _ = await observer_for(store, attempt=2)
    assert await in_thread(second.before_call, MESSAGES) == "42"
    # Events carry a signature the workflow can check; token usage counted once.
    (batch,) = sent.batches
    assert signing.verify("wf-1", batch.signed_body(), batch.signature)
    assert not signing.verify("wf-2", batch.signed_body(), batch.signature)
    assert first.usage.total_tokens == 15


async def test_changed_prompts_are_paid_for_again(store):
    journal = [JournalRecord(seq=0, prompt_hash="other", response="old")]
    observer, _ = await observer_for(store, attempt=2, journal=journal)
    assert await in_thread(observer.before_call, MESSAGES) is None
    assert observer.journal == []


async def test_an_unwritable_journal_fails_the_attempt_instead_of_going_on(store):
    class Down(JournalStore):
        async def append(self, key, record):
            if record.seq >= 0:  # the attempt started; the database went down after
                raise ConnectionError("database is down")

    observer, sent = await observer_for(Down(store.sessions))
    await in_thread(observer.before_call, MESSAGES)
    with pytest.raises(JournalUnavailable, match="database is down"):
        await in_thread(observer.after_call, paid("42"), MESSAGES)
    assert await observer.publisher.close() == []
    assert sent.events == [] and observer.journal == []
    # A BaseException: CrewAI's ``except Exception`` cannot swallow it and carry on.
    assert not issubclass(JournalUnavailable, Exception)


async def test_a_stale_attempt_stops_before_paying_again(store, monkeypatch):
    monkeypatch.setattr("activities.journal.FRESH_FOR", 0.0)  # ask the journal every time
    stale, _ = await observer_for(store, attempt=1)
    await in_thread(stale.before_call, MESSAGES)
    await in_thread(stale.after_call, paid("first"), MESSAGES)
    await store.begin(AttemptKey("wf-1", "run-1", "task", 2))  # Temporal retried elsewhere
    with pytest.raises(StaleAttempt):
        await in_thread(stale.before_call, MESSAGES + [{"role": "user", "content": "next"}])


async def test_one_watch_asks_once_for_every_running_attempt_and_stops_the_stale_one(
    store, monkeypatch
):
    """A worker's attempts share one query a round (per attempt, 1,000 attempts in flight
    made 500 queries a second): the superseded attempt is stopped, even before its next
    call, and the others go on."""
    queries: list[int] = []
    newest_attempts = store.newest_attempts

    async def counted(keys):
        keys = list(keys)
        queries.append(len(keys))
        await asyncio.sleep(0.05)  # a round under way: askers meanwhile share it
        return await newest_attempts(keys)

    monkeypatch.setattr(store, "newest_attempts", counted)
    watch = AttemptWatch(store)
    stale, _ = await observer_for(store, attempt=1)
    others = []
    for n in range(20):
        other, _ = await observer_for(store, attempt=1)
        other.key = AttemptKey("wf-1", "run-1", f"other-{n}", 1)
        others.append(other)
    for observer in (stale, *others):
        watch.watch(observer)
    await store.begin(AttemptKey("wf-1", "run-1", "task", 2))  # Temporal retried elsewhere
    await asyncio.gather(*(watch.refresh() for _ in range(50)))
    assert queries == [21]
    assert stale.stop_signal().done() and stale.superseded_by == 2
    assert not any(o.stop_signal().done() for o in others)
    # Before paying again, an attempt whose last answer is old asks the watch, not the
    # journal on its own.
    monkeypatch.setattr("activities.journal.FRESH_FOR", 0.0)
    other = others[0]
    await in_thread(other.before_call, MESSAGES)
    assert len(queries) == 2
    await store.begin(AttemptKey("wf-1", "run-1", "other-0", 2))
    with pytest.raises(StaleAttempt):
        await in_thread(other.before_call, MESSAGES + [{"role": "user", "content": "next"}])
    for observer in (stale, *others):
        watch.forget(observer)


async def test_attempts_compute_in_turns_and_wait_on_providers_all_at_once(store):
    """With one compute slot, an attempt computes only while the other waits on its
    provider; a waiting attempt that is cancelled stops waiting for a slot too."""
    import threading
    import time

    from activities.journal import call_abandonable

    slots = ComputeSlots(1)
    first, _ = await observer_for(store)
    second, _ = await observer_for(store, attempt=2)
    first.slot, second.slot = slots.holder(first), slots.holder(second)
    log: list[str] = []
    calling, answer = threading.Event(), threading.Event()

    def provider() -> str:
        log.append("first waits on its provider")
        calling.set()
        answer.wait(10)
        return "42"

    def first_task() -> str:
        first.slot.take()
        try:
            result = call_abandonable(first, provider)
            log.append("first computes again")
            return result
        finally:
            first.slot.give_back()

    def second_task() -> None:
        assert calling.wait(10)
        second.slot.take()  # free: the first attempt waits on its provider
        log.append("second computes")
        answer.set()  # the provider answers while the second still holds the slot
        time.sleep(0.3)
        log.append("second done")
        second.slot.give_back()

    running = asyncio.gather(in_thread(first_task), in_thread(second_task))
    assert await asyncio.wait_for(running, 10) == ["42", None]
    assert log == [
        "first waits on its provider",
        "second computes",
        "second done",
        "first computes again",
    ]
    # No slot free, then cancelled: the wait for one ends with the attempt.
    third, _ = await observer_for(store, attempt=3)
    third.slot = slots.holder(third)
    blocker = slots.holder(first)
    await in_thread(blocker.take)
    waiting = asyncio.ensure_future(in_thread(third.slot.take))
    await asyncio.sleep(0.2)
    third.cancel()
    with pytest.raises(TaskCancelled):
        await asyncio.wait_for(waiting, 5)
    blocker.give_back()


@pytest.mark.parametrize("pushed", [True, False])
async def test_an_attempt_beats_only_to_show_it_lives_where_the_server_pushes_cancels(
    store, temporal_client, heartbeat_cancel_client, pushed
):
    """Where the server pushes cancels to workers (as its namespace says), no heartbeat has
    a cancel to carry: an attempt beats a third of its heartbeat timeout apart (1 s of 3
    here). Where it does not, every half second, so a cancel arrives within about one."""
    signing.configure("test-secret")
    env = ActivityEnvironment(client=temporal_client if pushed else heartbeat_cancel_client)
    env.info = dataclasses.replace(
        env.info, started_time=datetime.now(UTC), heartbeat_timeout=timedelta(seconds=3)
    )
    watch = AttemptWatch(store)  # asks the server
    beats: list[float] = []
    started = time.monotonic()
    env.on_heartbeat = lambda *details: beats.append(time.monotonic() - started)

    def work(observer: TaskObserver, attempt: int) -> str:
        time.sleep(2.3)
        return "done"

    async def attempt() -> str:
        return (await run_observed(watch, None, "task", "agent", work)).raw

    assert await env.run(attempt) == "done"
    assert watch.cancels_pushed is pushed
    if pushed:
        assert len(beats) == 2 and 0.9 <= beats[0] <= 1.4, beats
    else:
        assert len(beats) >= 4 and beats[0] <= 0.9, beats


async def test_many_running_attempts_share_a_heartbeat_budget(store):
    """Each heartbeat is a write on the Temporal server: past the worker's budget its
    attempts beat less often, never less than three times per heartbeat timeout."""
    watch = AttemptWatch(store, heartbeats_per_second=100)
    assert watch.beat_every(0.5, 3.0) == 0.5  # nothing running yet
    observers = []
    for n in range(1000):
        observer, _ = await observer_for(store)
        observer.key = AttemptKey("wf-1", "run-1", f"t{n}", 1)
        observers.append(observer)
    for observer in observers[:200]:
        watch.watch(observer)
    assert watch.beat_every(0.5, 3.0) == 2.0  # 200 attempts x 1 every 2 s = 100 a second
    for observer in observers[200:]:
        watch.watch(observer)
    assert watch.beat_every(0.5, 3.0) == 3.0  # the heartbeat timeout still holds
    assert AttemptWatch(store).beat_every(0.5, 3.0) == 0.5  # no budget
    for observer in observers:
        watch.forget(observer)


async def test_an_answer_that_arrives_after_the_cancel_is_dropped(store):
    observer, sent = await observer_for(store)
    await in_thread(observer.before_call, MESSAGES)
    observer.cancel()  # cancelled while the provider was answering
    with pytest.raises(TaskCancelled):
        await in_thread(observer.after_call, paid("late"), MESSAGES)
    assert await observer.publisher.close() == []
    assert sent.events == [] and observer.journal == []
    assert await store.begin(AttemptKey("wf-1", "run-1", "task", 2)) == []


async def test_events_go_in_order_in_few_batches_and_the_rest_rides_on_the_result(store):
    """Each signal is a history event and a workflow task: events are batched (at most one
    batch a second), and what is unsent at the end goes back with the activity's result."""
    observer, sent = await observer_for(store)
    for n in range(30):
        messages = [{"role": "user", "content": f"call {n}"}]
        await in_thread(observer.before_call, messages)
        await in_thread(observer.after_call, paid(str(n)), messages)
        await asyncio.sleep(0.05)  # 1.5 s of calls
    rest = await observer.publisher.close()
    events = [*sent.events, *rest]
    assert [e.data["call"] for e in events] == list(range(1, 31))
    assert len({e.event_id for e in events}) == 30
    assert 1 <= len(sent.batches) <= 2 and rest


def test_prompt_hash_ignores_everything_but_role_and_content():
    assert prompt_hash(MESSAGES) == prompt_hash([{**MESSAGES[0], "name": "x"}])
    assert prompt_hash(MESSAGES) != prompt_hash([{"role": "system", "content": "What is 6 x 7?"}])


@pytest.mark.parametrize(
    ("started_ago", "first_beat_after"),
    [
        (0.0, (0.4, 0.9)),  # on time: the first beat is due half a second after the start
        (30.0, (0.0, 0.3)),  # the worker came to it late (a take-over): at once
    ],
)
async def test_an_attempt_beats_first_when_the_server_timed_it_from(
    store, temporal_client, started_ago, first_beat_after
):
    """The server times the heartbeat timeout from the attempt's start: a task that ends
    before its first beat is due sends none (each beat is a server write), and an attempt
    the worker got to late beats at once, before the server gives up on it."""
    signing.configure("test-secret")
    env = ActivityEnvironment(client=temporal_client)
    watch = AttemptWatch(store, cancels_pushed=False)  # cancels ride on heartbeats
    beats: list[float] = []

    async def attempt(seconds: float) -> str:
        def work(observer: TaskObserver, attempt: int) -> str:
            time.sleep(seconds)
            return "done"

        return (await run_observed(watch, None, "task", "agent", work)).raw

    def run(seconds: float):
        beats.clear()
        started = time.monotonic()
        env.on_heartbeat = lambda *details: beats.append(time.monotonic() - started)
        env.info = dataclasses.replace(
            env.info,
            started_time=datetime.now(UTC) - timedelta(seconds=started_ago),
            heartbeat_timeout=timedelta(seconds=3),
        )
        return env.run(attempt, seconds)

    if started_ago == 0.0:
        assert await run(0.2) == "done"
        assert beats == []  # a short task: no server write for a heartbeat
    assert await run(1.2) == "done"
    low, high = first_beat_after
    assert beats and low <= beats[0] <= high, beats
    assert len(beats) >= 2  # and then every half second


async def test_a_provider_call_is_awaited_on_the_provider_loop_and_a_stop_closes_it(
    store, llm_stub, monkeypatch
):
    """Kasal's OpenAI-compatible provider answers an attempt's call on the event loop the
    worker keeps for provider calls: no thread is started for it, and the activity's own loop
    does none of its work. An attempt stopped mid-call stops at once, and its request is
    closed (the connection's slot is free again), not left to finish."""
    import threading

    from activities.journal import ObservedLLM, provider_loop
    from kasal.http_pool import AsyncShardedTransport
    from kasal.llm import build_llm
    from kasal.settings import get_settings
    from kasal.spec import LLMSpec
    from kasal.testing.llm_stub import ModelBehaviour

    monkeypatch.setattr(get_settings(), "llm_base_urls", ["http://127.0.0.1:"])
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    async def transport_of(llm: ObservedLLM) -> AsyncShardedTransport:
        """The transport of the client ``llm``'s calls use on the provider loop."""

        async def client() -> AsyncShardedTransport:
            inner: Any = llm.inner  # Kasal's OpenAI-compatible class
            return inner._get_async_client()._client._transport

        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(client(), provider_loop())
        )

    provider_loop()  # its thread started before counting
    monkeypatch.setattr(threading.Thread, "start", start)
    observer, _ = await observer_for(store)
    llm = ObservedLLM.wrap(
        build_llm(LLMSpec(model="compatible/awaited", base_url=llm_stub.base_url)), observer
    )
    prompt = [{"role": "user", "content": "Current Task: say hi"}]
    answer = await in_thread(llm.call, prompt)  # from a thread of its own, as CrewAI calls
    assert "Final Answer" in answer
    assert "kasal-llm-call" not in started
    assert isinstance(await transport_of(llm), AsyncShardedTransport)
    from kasal import llm as kasal_llm

    assert asyncio.get_running_loop() not in kasal_llm._ASYNC_CLIENTS  # nothing on this one

    llm_stub.behaviours["glacial"] = ModelBehaviour(latency=15.0)
    stopped, _ = await observer_for(store, attempt=2)
    slow = ObservedLLM.wrap(
        build_llm(LLMSpec(model="compatible/glacial", base_url=llm_stub.base_url)), stopped
    )
    transport = await transport_of(slow)
    # Another prompt: the same one would be replayed from the first call's journal.
    other = [{"role": "user", "content": "Current Task: think hard"}]
    call = asyncio.ensure_future(in_thread(slow.call, other))
    for _ in range(100):
        if llm_stub.requests_for("glacial", None):
            break
        await asyncio.sleep(0.05)
    assert sum(s.in_flight for s in transport._shards) == 1
    asked = time.monotonic()
    stopped.cancel()
    with pytest.raises(TaskCancelled):
        await asyncio.wait_for(call, 5)
    assert time.monotonic() - asked < 1.0
    for _ in range(50):  # the cancel reaches the request on the loop
        if sum(s.in_flight for s in transport._shards) == 0:
            break
        await asyncio.sleep(0.02)
    assert sum(s.in_flight for s in transport._shards) == 0


async def test_an_awaited_call_cancelled_on_its_loop_fails_instead_of_hanging():
    """A provider call whose task ends cancelled by anything but the attempt's stop (its
    loop closing, a library's own cancel scope) fails the call; the attempt's thread does
    not wait for ever."""
    from activities.journal import LLMObserver, await_abandonable, provider_loop

    async def cancelled() -> str:
        raise asyncio.CancelledError

    call = in_thread(await_abandonable, LLMObserver(), provider_loop(), cancelled)
    with pytest.raises(RuntimeError, match="cancelled on its loop"):
        await asyncio.wait_for(call, 5)


def test_an_error_whose_causes_loop_is_reported_not_walked_for_ever():
    """An error raised while handling the error that caused it makes a cyclic chain (seen
    from provider clients). Reporting it once spun the worker's event loop for good: no
    heartbeat or task of that worker ran again."""
    import concurrent.futures

    from activities.journal import as_application_error
    from kasal.exceptions import ProviderError

    outer, inner = RuntimeError("outer"), ConnectionError("inner")
    outer.__context__, inner.__context__ = inner, outer
    behind = ProviderError("rate limited")
    behind.retryable = True
    looped = ValueError("looped")
    looped.__cause__ = outer
    outer.__cause__ = behind
    behind.__context__ = outer
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        error = pool.submit(as_application_error, looped).result(timeout=5)
        assert error.type == behind.code and not error.non_retryable
        first, second = RuntimeError("first"), ConnectionError("second")
        first.__context__, second.__context__ = second, first
        plain = pool.submit(as_application_error, second).result(timeout=5)
        assert plain.type == "ConnectionError"
