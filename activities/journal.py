"""Observed calls and their journal: the one home of Kasal's resume-mid-task guarantee.

A task attempt runs CrewAI in a thread. Every LLM call goes through :class:`ObservedLLM`
and every tool use through :class:`ObservedTool`; both report to the attempt's
:class:`TaskObserver`, which

- replays, for identical prompts, the responses earlier attempts already paid for,
- journals each new response in the app database (:mod:`kasal.db.journal`) before CrewAI
  goes on: once a call returns, its response is durable, so a crash costs at most the one
  call in flight; a journal that cannot be written fails the attempt (Temporal retries it)
  rather than let CrewAI go on with a response that a retry would pay for again,
- stops the attempt at its next call once it is cancelled, or stale (a newer attempt of
  the same activity has started, e.g. after Temporal timed this one out),
- sends ``llm_call`` / ``tool_call`` events to the workflow through a :class:`Publisher`
  that signs them (:mod:`kasal.signing`) and sends them in order, off CrewAI's thread.

:func:`run_observed` wraps an attempt: heartbeats, the thread, cancellation, error mapping.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from crewai.llms import retry as _crewai_retry
from crewai.llms.base_llm import BaseLLM
from crewai.tools import BaseTool
from pydantic import PrivateAttr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from kasal import metrics, signing, telemetry
from kasal.client import pushes_activity_cancels
from kasal.constants import EVENTS_SIGNAL
from kasal.db.journal import AttemptKey, JournalStore
from kasal.exceptions import InvalidSpecError, KasalError, ProviderError
from kasal.execution import ActivityEventsInput, Event, EventType, JournalRecord, TokenUsage
from kasal.llm import classify_provider_error, error_chain

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a running attempt heartbeats where cancels ride on heartbeats (the server does
#: not push them): the worker's heartbeat throttle (1 s) decides how often one reaches the
#: server, and so how soon a cancellation reaches the attempt. Where the server pushes
#: cancels, an attempt beats only a third of its heartbeat timeout apart.
HEARTBEAT_EVERY = 0.5
#: How long a cancelled attempt may take to stop its thread before reporting anyway.
CANCEL_GRACE = 3.0
#: How long the journal may take to answer before the attempt gives up and fails.
JOURNAL_TIMEOUT = 60.0
#: How often a running attempt asks the journal whether a newer attempt has started (after
#: a Temporal outage, say): a stale attempt abandons even a provider call in flight.
STALE_CHECK_EVERY = 2.0
#: Before paying for a call, the journal is asked again if its last word is older than this.
FRESH_FOR = 1.0
#: Characters of prompt, response or tool output a span carries when content capture is on.
CONTENT_LIMIT = 4000


class TaskCancelled(BaseException):
    """Raised in CrewAI's thread when the attempt must stop: cancelled, or stale.

    A ``BaseException`` so CrewAI's ``except Exception`` handlers do not swallow it.
    """


class StaleAttempt(TaskCancelled):
    """A newer attempt of the same activity runs: this one stops without paying more."""


class JournalUnavailable(BaseException):
    """The journal could not be written: the attempt fails and Temporal retries it.

    A ``BaseException`` so CrewAI cannot catch it and carry on with an unjournaled answer.
    """


def prompt_hash(messages: list[dict[str, Any]]) -> str:
    """A stable digest of the messages sent to an LLM."""
    canonical = json.dumps(
        [{"role": m.get("role"), "content": m.get("content")} for m in messages],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- the journal's codec --------------------------------------------------------------------

_TOOL_CALLS_MARK = "\x00kasal-tool-calls:"  # noqa: S105


def encode_response(result: Any) -> str:
    """An LLM response as journal text: plain text, or native tool calls as marked JSON."""
    if isinstance(result, str):
        return result
    if hasattr(result, "model_dump_json") and not isinstance(result, list):
        # A structured answer (``response_model``): its JSON, which CrewAI's converter
        # validates back into the same model when the journal replays it.
        return str(result.model_dump_json())
    if isinstance(result, list):
        calls = [c.model_dump() if hasattr(c, "model_dump") else c for c in result]
        kind = "openai" if result and hasattr(result[0], "model_dump") else "dict"
        return _TOOL_CALLS_MARK + json.dumps({"kind": kind, "calls": calls}, default=str)
    return str(result)


def decode_response(text: str) -> Any:
    """The inverse of :func:`encode_response`: what the provider returned, rebuilt."""
    if not text.startswith(_TOOL_CALLS_MARK):
        return text
    data = json.loads(text[len(_TOOL_CALLS_MARK) :])
    if data["kind"] == "openai":
        from openai.types.chat import ChatCompletionMessageToolCall

        return [ChatCompletionMessageToolCall.model_validate(c) for c in data["calls"]]
    return list(data["calls"])


# -- what the observed wrappers report to ---------------------------------------------------


@dataclass
class LLMCallRecord:
    """What the observer hears after each call."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    response: str
    replayed: bool = False


class LLMObserver:
    """Hooks around every LLM call of a task. The base class observes nothing."""

    def before_call(self, messages: list[dict[str, Any]]) -> str | None:
        """Called before the provider; return a response to use it instead (journal replay).

        Raising here (for example because the task was cancelled) aborts the call.
        """
        return None

    def after_call(self, record: LLMCallRecord, messages: list[dict[str, Any]]) -> None:
        """Called after each successful call."""

    def check(self) -> None:
        """Raises if the attempt must stop; a provider call in flight is then cancelled (one
        awaited on the provider loop) or abandoned (one in a thread: it finishes on its own
        and its answer is dropped)."""

    def stop_signal(self) -> concurrent.futures.Future[None] | None:
        """Done once the attempt must stop (None: it never does)."""
        return None

    def on_tool(self, data: dict[str, Any]) -> None:
        """Called after each tool use."""

    def before_tool(self, name: str, arguments: Any) -> str | None:
        """Called before a journaled tool runs; return its journaled result to replay it."""
        return None

    def after_tool(self, result: str) -> None:
        """Called after a journaled tool ran (not when it was replayed): journal ``result``."""

    def waiting(self) -> contextlib.AbstractContextManager[None]:
        """Around a wait on a provider or a tool: the attempt computes nothing meanwhile."""
        return contextlib.nullcontext()

    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this attempt's provider calls may be awaited on (None: each call
        runs in a thread of its own)."""
        return None


class ComputeSlots:
    """How many task attempts of a worker may run CrewAI's own code at once.

    Thousands of attempts wait on providers; only the few computing need the interpreter,
    and each holds a slot while it does (none while it waits on a call or a tool). Past
    the slots, attempts queue here in order (each blocked on an event of its own: no
    polling) instead of a thousand threads fighting for the GIL, which starves the event
    loop that sends their heartbeats (a late heartbeat times a live attempt out and pays
    for its call again).
    """

    def __init__(self, slots: int) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._queue: collections.deque[_Turn] = collections.deque()
        #: Attempts waiting on a provider or a tool now (see :class:`ActivityAdmission`).
        self.waiting = 0
        #: Called (from the attempt's thread) when an attempt starts such a wait.
        self.on_wait: Callable[[], None] | None = None

    def wait_began(self) -> None:
        with self._lock:
            self.waiting += 1
        if self.on_wait is not None:
            self.on_wait()

    def wait_ended(self) -> None:
        with self._lock:
            self.waiting -= 1

    def holder(self, observer: LLMObserver) -> SlotHolder:
        return SlotHolder(self, observer)

    def acquire(self, stop: concurrent.futures.Future[None] | None) -> bool:
        """A slot (True), or False once ``stop`` is done first."""
        with self._lock:
            if self._free > 0 and not self._queue:
                self._free -= 1
                return True
            turn = _Turn()
            self._queue.append(turn)
        if stop is not None:
            stop.add_done_callback(lambda _: turn.set())
        turn.wait()
        with self._lock:
            if turn.granted:
                return True
            with contextlib.suppress(ValueError):
                self._queue.remove(turn)
            return False

    def release(self) -> None:
        with self._lock:
            while self._queue:
                turn = self._queue.popleft()
                if not turn.is_set():  # set already: it stopped waiting
                    turn.granted = True
                    turn.set()
                    return
            self._free += 1


class _Turn(threading.Event):
    """One attempt's place in the queue for a slot."""

    granted = False


class SlotHolder:
    """One attempt's slot: taken to compute, given back around each wait. Calls that the
    attempt makes at once (CrewAI's parallel tools) share it."""

    def __init__(self, slots: ComputeSlots, observer: LLMObserver) -> None:
        self._slots = slots
        self._observer = observer
        self._lock = threading.Lock()
        self._held = False
        self._waits = 0

    def take(self) -> None:
        """Wait for a slot; stops waiting (raising) once the attempt must stop."""
        if not self._slots.acquire(self._observer.stop_signal()):
            self._observer.check()  # raises: the attempt stopped
        with self._lock:
            self._held = True

    def give_back(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._slots.release()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        with self._lock:
            self._waits += 1
            first = self._waits == 1
            release = self._held and first
            if release:
                self._held = False
        if release:
            self._slots.release()
        if first:
            self._slots.wait_began()
        try:
            yield
        finally:
            with self._lock:
                self._waits -= 1
                last = self._waits == 0
                again = last and not self._held
            if last:
                self._slots.wait_ended()
            if again:
                self.take()


_provider_loop: asyncio.AbstractEventLoop | None = None
_provider_loop_lock = threading.Lock()


def provider_loop() -> asyncio.AbstractEventLoop:
    """The event loop a worker's awaited provider calls run on, in a thread of its own.

    Not the worker's loop: that one sends heartbeats and starts and completes activities, and
    under load it gets a slice of the interpreter no larger than a computing task's. With the
    calls' requests and answers on it, a standby worker took 6.4-7.2 s to run a killed
    worker's task again; on a loop of their own, 2.3-4.0 s (``bench/recovery.py``, 100 crews
    running, 2 s heartbeat timeout; same-run figures in the README).
    """
    global _provider_loop
    with _provider_loop_lock:
        if _provider_loop is None:  # never closed: it serves the process to its end
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="kasal-provider-calls", daemon=True
            )
            thread.start()
            _provider_loop = loop
        return _provider_loop


def call_abandonable(observer: LLMObserver, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn(*args, **kw)`` in a daemon thread of its own, abandoned the moment the observer's
    stop signal fires (a blocking HTTP request cannot be interrupted: its answer is dropped,
    and it never delays exit)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    run = contextvars.copy_context().run

    def target() -> None:
        try:
            future.set_result(run(fn, *args, **kw))
        except BaseException as exc:  # handed to the waiting thread
            future.set_exception(exc)

    threading.Thread(target=target, name="kasal-llm-call", daemon=True).start()
    return _wait_unless_stopped(observer, future)


def _wait_unless_stopped(
    observer: LLMObserver,
    future: concurrent.futures.Future[T],
    abandon: Callable[[], None] | None = None,
) -> T:
    """``future``'s result, or the observer's stop (``abandon()``, then its error) if that
    comes first. Waits on both without polling: a thousand calls in flight cost no CPU."""
    waits: list[concurrent.futures.Future[Any]] = [future]
    stop = observer.stop_signal()
    if stop is not None:
        waits.append(stop)
    with observer.waiting():
        concurrent.futures.wait(waits, return_when=concurrent.futures.FIRST_COMPLETED)
    if not future.done():
        if abandon is not None:
            abandon()
        observer.check()  # raises: the attempt stopped
    return future.result()


def await_abandonable(
    observer: LLMObserver,
    loop: asyncio.AbstractEventLoop,
    start: Callable[[], Coroutine[Any, Any, T]],
) -> T:
    """Await ``start()`` on ``loop`` (:func:`provider_loop`) from CrewAI's thread and wait, as
    :func:`call_abandonable` does, holding no thread of its own while the provider answers.
    When the observer's stop signal fires the call is cancelled: its request is closed, not
    left to finish. The coroutine runs in a copy of the calling thread's context."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    context = contextvars.copy_context()
    running: list[asyncio.Task[T]] = []

    def settle(task: asyncio.Task[T]) -> None:
        if task.cancelled():  # by the stop, or by the loop's own end: the wait ends either way
            future.set_exception(RuntimeError("the provider call was cancelled on its loop"))
        elif (exc := task.exception()) is not None:
            future.set_exception(exc)
        else:
            future.set_result(task.result())

    def begin() -> None:
        if not future.set_running_or_notify_cancel():
            return  # stopped before the loop got to it: never sent
        task = loop.create_task(start(), context=context)
        running.append(task)
        task.add_done_callback(settle)

    def cancel() -> None:
        for task in running:
            task.cancel()

    def abandon() -> None:
        if not future.cancel():  # sent already: cancel the request
            loop.call_soon_threadsafe(cancel)

    loop.call_soon_threadsafe(begin)
    return _wait_unless_stopped(observer, future, abandon)


def _as_messages(messages: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


class ObservedLLM(BaseLLM):
    """Wraps a provider's LLM so every call is observed: events, journal, cancellation.

    Errors are translated into Kasal's provider errors, which say whether a retry can help.
    """

    llm_type: str = "observed"
    _inner: BaseLLM = PrivateAttr()
    _observer: LLMObserver = PrivateAttr(default_factory=LLMObserver)

    @classmethod
    def wrap(cls, inner: BaseLLM, observer: LLMObserver) -> ObservedLLM:
        """An observed LLM around ``inner``."""
        llm = cls(model=inner.model, temperature=inner.temperature, stop=list(inner.stop))
        llm._inner = inner
        llm._observer = observer
        return llm

    @property
    def inner(self) -> BaseLLM:
        """The provider's LLM."""
        return self._inner

    def supports_function_calling(self) -> bool:
        # Not declared on BaseLLM, but every provider class has it.
        return bool(getattr(self._inner, "supports_function_calling", lambda: False)())

    def supports_stop_words(self) -> bool:
        return bool(self._inner.supports_stop_words())

    def get_context_window_size(self) -> int:
        return int(self._inner.get_context_window_size())

    def _awaitable(self) -> bool:
        """Whether the provider's calls can be awaited on the provider loop (Kasal's own
        provider classes say so; any other LLM is called in a thread)."""
        return bool(getattr(type(self._inner), "awaitable_calls", False))

    def call(  # type: ignore[override]
        self,
        messages: str | list[dict[str, Any]],
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        with telemetry.span("llm.call", {"gen_ai.request.model": self.model}) as span:
            return self._call_observed(
                span,
                messages,
                tools=tools,
                callbacks=callbacks,
                available_functions=available_functions,
                from_task=from_task,
                from_agent=from_agent,
                response_model=response_model,
            )

    call._crewai_rate_limit_wrapped = True  # type: ignore[attr-defined]

    def _call_observed(
        self,
        span: Any,
        messages: str | list[dict[str, Any]],
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        msgs = _as_messages(messages)
        if telemetry.capture_content():
            span.set_attribute("gen_ai.prompt", json.dumps(msgs, default=str)[:CONTENT_LIMIT])
        replayed = self._observer.before_call(msgs)
        if replayed is not None:
            self._observer.after_call(
                LLMCallRecord(self.model, 0, 0, 0.0, replayed, replayed=True), msgs
            )
            # A scripted model counts the replayed call, so the script goes on from there.
            note = getattr(self._inner, "note_replayed", None)
            if callable(note):
                note()
            span.set_attribute("kasal.replayed", True)
            metrics.LLM_CALLS.labels(model=self.model, replayed="true").inc()
            metrics.JOURNAL_REPLAYS.inc()
            return decode_response(replayed)
        before = self._inner.get_token_usage_summary()
        started = time.perf_counter()
        # Temporal owns retries: CrewAI's own rate-limit retry loop steps aside when it
        # believes one is already running.
        token = _crewai_retry._active_llm_rate_limit_retry.set(True)
        try:
            self._inner.stop = list(self.stop)
            kwargs: dict[str, Any] = {
                "tools": tools,
                "callbacks": callbacks,
                "available_functions": available_functions,
                "from_task": from_task,
                "from_agent": from_agent,
                "response_model": response_model,
            }
            loop = self._observer.loop()
            # Awaited on the provider loop when the provider has a real async path. Not with
            # available_functions: the provider would then run the tool itself, on the loop.
            if loop is not None and not available_functions and self._awaitable():
                result = await_abandonable(
                    self._observer,
                    loop,
                    lambda: self._inner.acall(messages, **kwargs),  # type: ignore[arg-type]
                )
            else:
                result = call_abandonable(self._observer, self._inner.call, messages, **kwargs)
        except ProviderError:
            raise
        except Exception as exc:
            raise classify_provider_error(exc) from exc
        finally:
            _crewai_retry._active_llm_rate_limit_retry.reset(token)
        latency = (time.perf_counter() - started) * 1000
        after = self._inner.get_token_usage_summary()
        prompt = after.prompt_tokens - before.prompt_tokens
        completion = after.completion_tokens - before.completion_tokens
        self._track_token_usage_internal(
            {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        )
        text = encode_response(result)
        span.set_attributes(
            {
                "kasal.replayed": False,
                "gen_ai.usage.input_tokens": prompt,
                "gen_ai.usage.output_tokens": completion,
                "kasal.llm.latency_ms": round(latency, 2),
            }
        )
        if telemetry.capture_content():
            span.set_attribute("gen_ai.completion", text[:CONTENT_LIMIT])
        metrics.LLM_CALLS.labels(model=self.model, replayed="false").inc()
        metrics.LLM_TOKENS.labels(model=self.model, kind="prompt").inc(prompt)
        metrics.LLM_TOKENS.labels(model=self.model, kind="completion").inc(completion)
        metrics.LLM_LATENCY.labels(model=self.model).observe(latency / 1000)
        self._observer.after_call(
            LLMCallRecord(self.model, prompt, completion, latency, text), msgs
        )
        return result


def tool_digest(name: str, arguments: Any) -> str:
    """A stable digest of a tool call: the tool's name and its arguments."""
    canonical = json.dumps({"tool": name, "arguments": arguments}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_idempotent(tool: BaseTool) -> bool:
    """True if ``tool`` says running it twice does no harm (``idempotent = True``).

    Idempotent tools run again on a retried attempt; every other tool's finished result is
    journaled and replayed, so a crash never runs its effect twice.
    """
    return bool(getattr(tool, "idempotent", False))


class ObservedTool(BaseTool):
    """A tool wrapper that journals each use and reports it (name, input, output, duration).

    A tool that is not idempotent has its result journaled before CrewAI sees it, exactly
    like an LLM response: a retried attempt that reaches the same call with the same
    arguments gets the journaled result back and the tool does not run again.
    """

    _inner: BaseTool = PrivateAttr()
    _observer: LLMObserver = PrivateAttr(default_factory=LLMObserver)

    @classmethod
    def wrap(cls, inner: BaseTool, observer: LLMObserver) -> ObservedTool:
        """Observe ``inner``: same name, description and arguments."""
        tool = cls(
            name=inner.name,
            description=inner.description,
            args_schema=inner.args_schema,
            result_as_answer=inner.result_as_answer,
        )
        tool._inner = inner
        tool._observer = observer
        return tool

    @property
    def inner(self) -> BaseTool:
        """The tool observed."""
        return self._inner

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        self._observer.check()
        with telemetry.span("tool.call", {"kasal.tool": self.name}) as span:
            return self._run_observed(span, *args, **kwargs)

    def _run_observed(self, span: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        error: str | None = None
        output: Any = None
        replayed = False
        arguments = kwargs or list(args)
        journaled = not is_idempotent(self._inner)
        try:
            if journaled:
                previous = self._observer.before_tool(self.name, arguments)
                if previous is not None:
                    replayed = True
                    output = previous
                    return output
            with self._observer.waiting():
                output = self._inner.run(*args, **kwargs)
            if journaled:
                self._observer.after_tool(str(output))
            return output
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            span.set_attribute("kasal.tool.error", type(exc).__name__)
            raise
        finally:
            outcome = "error" if error else "ok"
            metrics.TOOL_CALLS.labels(tool=self.name, outcome=outcome).inc()
            if telemetry.capture_content() and output is not None:
                span.set_attribute("kasal.tool.output", str(output)[:CONTENT_LIMIT])
            self._observer.on_tool(
                {
                    "tool": self.name,
                    "input": arguments,
                    "output": None if output is None else str(output)[:500],
                    "error": error,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "replayed": replayed,
                }
            )


# -- events to the workflow -----------------------------------------------------------------


class Publisher:
    """Signs events and sends them to the workflow in order, off CrewAI's thread.

    Each signal is a history event and a workflow task, so events are batched: a batch
    waits :data:`LINGER` seconds for company and goes at most every :data:`MIN_INTERVAL`
    seconds. What is still unsent when the attempt ends rides on its result instead: a task
    whose only call is its final answer sends no signal at all.

    Events are what people watch, not what durability rests on (the journal is): a batch the
    workflow cannot be reached for is retried a few times, then dropped with a warning.
    """

    SEND_TRIES = 5
    #: How long a new event waits for others before a batch goes out.
    LINGER = 0.25
    #: The least time between two batches.
    MIN_INTERVAL = 1.0

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[ActivityEventsInput], Awaitable[Any]],
        *,
        workflow_id: str,
        task: str,
        activity_id: str,
        attempt: int,
    ) -> None:
        self.loop = loop
        self._send = send
        self._workflow_id = workflow_id
        self.task = task
        self.activity_id = activity_id
        self.attempt = attempt
        self._prefix = f"{activity_id}-a{attempt}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._lock = threading.Lock()
        self._queue: list[Event] = []
        self._closing = False
        self._sending = False
        self._last_sent = loop.time() - self.MIN_INTERVAL
        self._sender: asyncio.Task[None] | None = None

    def event(self, kind: EventType, agent: str | None, data: dict[str, Any]) -> Event:
        """A new event of this attempt (ids unique across attempts and workers)."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        return Event(
            type=kind,
            timestamp=datetime.now(UTC),
            task=self.task,
            agent=agent,
            attempt=self.attempt,
            data=data,
            event_id=f"{self._prefix}-{seq}",
        )

    def batch(self, events: list[Event]) -> ActivityEventsInput:
        """A signed batch of ``events``."""
        batch = ActivityEventsInput(
            task=self.task, attempt=self.attempt, events=events, journal_key=self.activity_id
        )
        batch.signature = signing.sign(self._workflow_id, batch.signed_body())
        return batch

    def publish(self, events: list[Event]) -> None:
        """Queue events for sending; callable from any thread, returns at once."""
        self.loop.call_soon_threadsafe(self._enqueue, events)

    def _enqueue(self, events: list[Event]) -> None:
        if self._closing:
            return
        self._queue.extend(events)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        # One batch in flight at a time, in order; what piles up meanwhile goes in the next.
        while self._queue and not self._closing:
            wait = max(self.LINGER, self._last_sent + self.MIN_INTERVAL - self.loop.time())
            await asyncio.sleep(wait)  # cancelled by close(): nothing is taken yet
            if self._closing:
                return
            events, self._queue = self._queue, []
            self._sending = True
            try:
                await self.deliver(events)
            finally:
                self._sending = False
                self._last_sent = self.loop.time()

    async def close(self, *, discard: bool = False) -> list[Event]:
        """Stop sending; the events not sent yet (none if ``discard``: a cancelled attempt's
        last answer is dropped). Waits for a batch in flight, so nothing is sent after."""
        self._closing = True
        await asyncio.sleep(0)  # let events queued from CrewAI's thread land first
        sender = self._sender
        if sender is not None and not sender.done():
            if self._sending:
                await asyncio.shield(sender)
            else:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        rest, self._queue = self._queue, []
        return [] if discard else rest

    async def deliver(self, events: list[Event]) -> None:
        """Send ``events`` now, in one signed batch; wait until delivered (or given up)."""
        if not events:
            return
        batch = self.batch(events)
        for attempt in range(self.SEND_TRIES):
            try:
                await self._send(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt + 1 == self.SEND_TRIES:
                    log.warning("could not send %d event(s) to the workflow: %s", len(events), exc)
                    return
                await asyncio.sleep(0.2 * 2**attempt)


# -- one attempt's observer -----------------------------------------------------------------


class TaskObserver(LLMObserver):
    """Journals, replays, reports and guards every LLM call and tool use of one attempt."""

    def __init__(
        self,
        publisher: Publisher,
        agent: str,
        store: JournalStore,
        key: AttemptKey,
        journal: list[JournalRecord],
        watch: AttemptWatch | None = None,
    ) -> None:
        self.publisher = publisher
        self.agent = agent
        self.store = store
        self.key = key
        self.journal = journal
        #: The worker's watch over its running attempts (None: this observer asks itself).
        self.watch = watch
        #: The attempt's compute slot (None: it computes whenever it likes).
        self.slot: SlotHolder | None = None
        #: Done once the attempt must stop: cancelled, or superseded by a newer attempt.
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.calls = 0
        self.replayed = 0
        #: Position in the journal: LLM calls and journaled tool calls, in the order made.
        self.position = 0
        #: Tool calls run by this attempt, and tool calls replayed from the journal.
        self.tool_runs = 0
        self.tool_replays = 0
        self.usage = TokenUsage()
        #: The newer attempt that superseded this one, once known.
        self.superseded_by: int | None = None
        #: When the journal last said no newer attempt runs (it just began: now).
        self._fresh_at = time.monotonic()
        self._pending_hash = ""
        self._pending_tools: list[Event] = []

    def check(self) -> None:
        """Stop the task's thread here if the attempt was cancelled or superseded."""
        if self.stopped.done():
            if self.superseded_by is not None:
                raise StaleAttempt(self._stale_message())
            raise TaskCancelled("task cancelled")

    def stop_signal(self) -> concurrent.futures.Future[None]:
        return self.stopped

    def cancel(self) -> None:
        """The workflow cancelled the attempt: stop at once, even in a provider call."""
        if not self.stopped.done():
            self.stopped.set_result(None)

    def waiting(self) -> contextlib.AbstractContextManager[None]:
        return self.slot.waiting() if self.slot is not None else contextlib.nullcontext()

    def loop(self) -> asyncio.AbstractEventLoop:
        return provider_loop()

    def supersede(self, newest: int) -> None:
        """A newer attempt runs: stop at once, even in the middle of a provider call."""
        self.superseded_by = newest
        self.cancel()

    def _stale_message(self) -> str:
        return f"attempt {self.superseded_by} of this task has started; this one stops"

    def wait_for(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (the journal's, memory's) on the activity's event loop from CrewAI's
        thread and wait for it; a failure fails the attempt, which Temporal retries."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coro, self.publisher.loop
        )
        try:
            return future.result(timeout=JOURNAL_TIMEOUT)
        except BaseException as exc:
            future.cancel()
            raise JournalUnavailable(f"the journal could not be reached: {exc}") from exc

    def before_call(self, messages: list[dict[str, Any]]) -> str | None:
        self.check()
        digest = prompt_hash(messages)
        self._pending_hash = digest
        return self._replay_or_claim("llm", digest)

    def _replay_or_claim(self, kind: str, digest: str) -> str | None:
        """The journaled result at this position if it is the same call, else None (and
        the call is this attempt's to make)."""
        if self.position < len(self.journal):
            entry = self.journal[self.position]
            if entry.kind == kind and entry.prompt_hash == digest:
                return entry.response
        # Past the journal (or the calls changed): everything after is paid for again,
        # unless a newer attempt already runs, which would pay for it too. (Asked at most
        # once a second: the attempt's own watch asks every few seconds anyway.)
        del self.journal[self.position :]
        if time.monotonic() - self._fresh_at > FRESH_FOR and self.watch is not None:
            self.wait_for(self.watch.refresh())  # one query for every attempt asking now
            self.check()
        elif time.monotonic() - self._fresh_at > FRESH_FOR:
            newest = self.wait_for(self.store.newest_attempt(self.key))
            if newest > self.key.attempt:
                self.supersede(newest)
                raise StaleAttempt(self._stale_message())
            self._fresh_at = time.monotonic()
        return None

    def before_tool(self, name: str, arguments: Any) -> str | None:
        self.check()
        digest = tool_digest(name, arguments)
        self._pending_hash = digest
        previous = self._replay_or_claim("tool", digest)
        if previous is not None:
            self.position += 1
            self.tool_replays += 1
        return previous

    def after_tool(self, result: str) -> None:
        # The effect happened: durable before CrewAI goes on, so no retry runs it again.
        entry = JournalRecord(
            seq=self.position, kind="tool", prompt_hash=self._pending_hash, response=result
        )
        self.wait_for(self.store.append(self.key, entry))
        self.journal.append(entry)
        self.position += 1
        self.tool_runs += 1

    def after_call(self, record: LLMCallRecord, messages: list[dict[str, Any]]) -> None:
        # A cancellation that arrived while the provider answered: the answer is dropped.
        self.check()
        seq = self.position
        self.position += 1
        self.calls += 1
        data: dict[str, Any] = {
            "model": record.model,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "latency_ms": round(record.latency_ms, 2),
            "call": self.calls,
            "replayed": record.replayed,
        }
        if record.replayed:
            self.replayed += 1
        else:
            entry = JournalRecord(
                seq=seq, kind="llm", prompt_hash=self._pending_hash, response=record.response
            )
            # Durable before CrewAI goes on: a retry replays it instead of paying again.
            self.wait_for(self.store.append(self.key, entry))
            self.journal.append(entry)
            self.usage = self.usage + TokenUsage(
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                total_tokens=record.prompt_tokens + record.completion_tokens,
                requests=1,
            )
        events = [*self._pending_tools, self.publisher.event(EventType.LLM_CALL, self.agent, data)]
        self._pending_tools = []
        self.publisher.publish(events)

    def on_tool(self, data: dict[str, Any]) -> None:
        self._pending_tools.append(self.publisher.event(EventType.TOOL_CALL, self.agent, data))

    def flush(self) -> None:
        """Queue the tool events not yet followed by an LLM call."""
        if self._pending_tools:
            events, self._pending_tools = self._pending_tools, []
            self.publisher.publish(events)


class AttemptWatch:
    """One watch over every attempt running on a worker: has a newer attempt of any of them
    started (after a Temporal outage, say)? A superseded attempt stops at once, even in the
    middle of a provider call.

    One query a round answers for all of them, every :data:`STALE_CHECK_EVERY` seconds and
    whenever an attempt is about to pay for a call and its last answer is older than
    :data:`FRESH_FOR`; attempts asking while a round is under way share it. (Asked per
    attempt, a worker with 1,000 attempts in flight made 500 queries a second.)
    """

    def __init__(
        self,
        store: JournalStore,
        heartbeats_per_second: float | None = None,
        cancels_pushed: bool | None = None,
    ) -> None:
        self.store = store
        #: Heartbeats a second the worker's running attempts send together, at most (None:
        #: each beats as often as it likes).
        self.heartbeats_per_second = heartbeats_per_second
        #: Whether the Temporal server pushes cancels to this worker (None: the namespace is
        #: asked by the first attempt that needs to know).
        self.cancels_pushed = cancels_pushed
        self._asking: asyncio.Future[bool] | None = None
        self._running: dict[AttemptKey, TaskObserver] = {}
        self._round: asyncio.Future[None] | None = None
        self._round_began = float("-inf")
        self._watching: asyncio.Task[None] | None = None

    def watch(self, observer: TaskObserver) -> None:
        """Watch ``observer``'s attempt until :meth:`forget`."""
        observer.watch = self
        self._running[observer.key] = observer
        if self._watching is None or self._watching.done():
            self._watching = asyncio.get_running_loop().create_task(self._watch())

    def beat_every(self, fastest: float, slowest: float) -> float:
        """Seconds between an attempt's heartbeats: ``fastest`` while few attempts run; with
        many, as slow as the worker's heartbeat budget needs, never slower than ``slowest``.

        Every heartbeat is a write on the Temporal server: a thousand attempts beating each
        second (all waiting on providers) kept a dev server too busy to record them in time,
        and it timed live attempts out. A cancel then takes up to ``slowest`` to arrive.
        """
        if not self.heartbeats_per_second:
            return fastest
        return max(fastest, min(slowest, len(self._running) / self.heartbeats_per_second))

    async def pushes_cancels(self) -> bool:
        """Whether a cancel reaches this worker's attempts without a heartbeat to carry it;
        asked of the server once (attempts asking at once share the answer)."""
        if self.cancels_pushed is None:
            if self._asking is None:
                info = activity.info()
                self._asking = asyncio.ensure_future(
                    pushes_activity_cancels(activity.client(), info.namespace)
                )
            self.cancels_pushed = await asyncio.shield(self._asking)
        return self.cancels_pushed

    def forget(self, observer: TaskObserver) -> None:
        if self._running.get(observer.key) is observer:
            del self._running[observer.key]
        if not self._running and self._watching is not None:
            self._watching.cancel()  # nothing to watch: no task left pending at shutdown
            self._watching = None

    async def refresh(self) -> None:
        """A round that began at most :data:`FRESH_FOR` ago, or a new one; its failure
        (the journal unreachable) is the caller's."""
        asked = time.monotonic()
        while True:
            current = self._round
            if current is not None and not current.done():
                if self._round_began >= asked - FRESH_FOR:
                    return await asyncio.shield(current)
                with contextlib.suppress(Exception):  # too old: wait for it, then a new one
                    await asyncio.shield(current)
                continue
            self._round_began = time.monotonic()
            self._round = asyncio.ensure_future(self._check(self._round_began))
            return await asyncio.shield(self._round)

    async def _check(self, began: float) -> None:
        observers = dict(self._running)
        newest = await self.store.newest_attempts(observers)
        for key, observer in observers.items():
            if newest.get(key, 0) > key.attempt:
                observer.supersede(newest[key])
            else:
                observer._fresh_at = max(observer._fresh_at, began)

    async def _watch(self) -> None:
        while self._running:
            await asyncio.sleep(STALE_CHECK_EVERY)
            with contextlib.suppress(Exception):  # the attempts' own calls say more
                await self.refresh()


# -- one attempt, run -----------------------------------------------------------------------


def first_beat_in(info: activity.Info, interval: float) -> float:
    """Seconds until an attempt's first heartbeat: ``interval`` after the server started the
    attempt, at once if that has passed.

    The server times the heartbeat timeout from the attempt's start, not from when this
    worker got to it, so a beat sent at once only helps an attempt that got here late; one
    due ``interval`` (at most a third of the timeout) after the start leaves it the rest.
    """
    late = (datetime.now(UTC) - info.started_time).total_seconds()
    return min(interval, max(0.0, interval - late))


def as_application_error(exc: BaseException) -> ApplicationError:
    """A Temporal error that tells the retry policy whether trying again can help."""
    for cause in error_chain(exc):
        if isinstance(cause, JournalUnavailable):
            return ApplicationError(str(cause), type="journal_unavailable")
        if isinstance(cause, KasalError):
            retryable = isinstance(cause, ProviderError) and cause.retryable
            # Errors outside the provider family say for themselves (TaskTimeoutError: yes).
            if not isinstance(cause, ProviderError):
                retryable = bool(getattr(cause, "retryable", False))
            if isinstance(cause, InvalidSpecError):
                retryable = False
            retry_after = getattr(cause, "retry_after", None)
            return ApplicationError(
                str(cause),
                {"retry_after": retry_after},
                type=cause.code,
                non_retryable=not retryable,
                # A provider that says when to come back is obeyed over the backoff.
                next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
            )
    return ApplicationError(f"{type(exc).__name__}: {exc}", type=type(exc).__name__)


@dataclass
class Observed:
    """What one observed attempt produced."""

    raw: str
    observer: TaskObserver
    attempt: int
    #: Events not yet sent to the workflow: they ride on the activity's result.
    events: list[Event]


async def run_observed(
    watch: AttemptWatch,
    executor: concurrent.futures.Executor | None,
    task: str,
    agent: str,
    work: Callable[[TaskObserver, int], str],
    slots: ComputeSlots | None = None,
) -> Observed:
    """Run ``work`` in a thread as one observed attempt of the calling activity.

    Heartbeats (within the worker's budget), journals and replays calls, sends events, stops on
    cancellation (within about a heartbeat) or when superseded, maps errors to retryable or
    not. Waiting costs no CPU: the thread blocks on its provider call and this coroutine on
    the thread; the worker's :class:`AttemptWatch` looks for newer attempts for all of them.
    """
    store = watch.store
    info = activity.info()
    workflow_id = info.workflow_id or ""
    handle = activity.client().get_workflow_handle(workflow_id, run_id=info.workflow_run_id)

    async def send(batch: ActivityEventsInput) -> None:
        await handle.signal(EVENTS_SIGNAL, batch)

    every = slowest = HEARTBEAT_EVERY
    if info.heartbeat_timeout:
        slowest = max(info.heartbeat_timeout.total_seconds() / 3, 0.1)
        # A cancel the server pushes needs no heartbeat: beat only to show the attempt lives.
        every = slowest if await watch.pushes_cancels() else min(every, slowest)
    observer: TaskObserver | None = None

    async def beat() -> None:
        # As the worker's budget allows, the first one timed from the server's start of the
        # attempt: a short task sends none (each is a server write), and an attempt this
        # worker came to late (taking over a dead one's crews, a burst) beats at once.
        await asyncio.sleep(first_beat_in(info, watch.beat_every(every, slowest)))
        while True:
            activity.heartbeat(observer.calls if observer is not None else 0)
            await asyncio.sleep(watch.beat_every(every, slowest))

    heart = asyncio.create_task(beat())
    attempt = info.attempt
    publisher = Publisher(
        asyncio.get_running_loop(),
        send,
        workflow_id=workflow_id,
        task=task,
        activity_id=info.activity_id,
        attempt=attempt,
    )
    try:
        key = AttemptKey(workflow_id, info.workflow_run_id or "", info.activity_id, attempt)
        try:
            journal = await store.begin(key)
        except Exception as exc:
            raise ApplicationError(
                f"the journal could not be reached: {exc}", type="journal_unavailable"
            ) from None
        if attempt > 1:
            started = publisher.event(
                EventType.TASK_STARTED,
                agent,
                {"journaled_calls": len(journal), "resumed": True, "step": info.activity_id},
            )
            await publisher.deliver([started])
        observer = TaskObserver(publisher, agent, store, key, journal)
        if slots is not None:
            observer.slot = slots.holder(observer)
        watch.watch(observer)
        current = observer
        kind = info.activity_type
        if attempt > 1:
            metrics.TASK_RETRIES.labels(kind=kind).inc()
        log_fields = {
            "execution_id": workflow_id.removeprefix("kasal-exec-"),
            "task": task,
            "agent": agent,
            "attempt": str(attempt),
        }
        began = time.perf_counter()
        outcome = "failed"

        def run() -> str:
            token = telemetry.log_context.set(log_fields)
            try:
                if current.slot is not None:
                    current.slot.take()
                log.info("task %s attempt %d started", task, attempt)
                return work(current, attempt)
            finally:
                if current.slot is not None:
                    current.slot.give_back()
                current.flush()
                telemetry.log_context.reset(token)

        # The thread runs in this context's copy: the activity's span (tracing) is the
        # parent of every LLM and tool span CrewAI's calls make there.
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(executor, context.run, run)
        try:
            # Not ``await future``: a cancellation here must leave the thread its grace.
            await asyncio.wait({future})
            raw = future.result()
            observed = Observed(raw, observer, attempt, await publisher.close())
            outcome = "completed"
            return observed
        except asyncio.CancelledError:
            outcome = "cancelled"
            # Abandon CrewAI's provider call now (or stop it at its next call or tool use),
            # drop what it had not yet reported, then report the cancellation.
            observer.cancel()
            await publisher.close(discard=True)
            await asyncio.wait({future}, timeout=CANCEL_GRACE)
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        except StaleAttempt as exc:
            await publisher.close(discard=True)
            raise ApplicationError(str(exc), type="stale_attempt") from None
        except TaskCancelled as exc:
            await publisher.close(discard=True)
            raise asyncio.CancelledError() from exc
        except BaseException as exc:
            error = as_application_error(exc)
            await _report_failure(publisher, agent, error, info)
            raise error from None  # provider chains can be cyclic; the message says it
        finally:
            watch.forget(observer)
            metrics.TASK_DURATION.labels(kind=kind, outcome=outcome).observe(
                time.perf_counter() - began
            )
    finally:
        heart.cancel()


async def _report_failure(
    publisher: Publisher, agent: str, error: ApplicationError, info: activity.Info
) -> None:
    """Send what the attempt did, and when Temporal will retry it (if it will)."""
    events = await publisher.close()
    policy = info.retry_policy
    max_attempts = policy.maximum_attempts if policy else 0
    will_retry = not error.non_retryable and (max_attempts == 0 or info.attempt < max_attempts)
    if policy and policy.non_retryable_error_types and error.type:
        will_retry = will_retry and error.type not in policy.non_retryable_error_types
    if will_retry:
        events.append(
            publisher.event(
                EventType.TASK_RETRYING,
                agent,
                {
                    "error": str(error.message),
                    "error_type": error.type,
                    "next_attempt": info.attempt + 1,
                    "max_attempts": max_attempts or None,
                    "retry_in_seconds": _next_delay(policy, info.attempt),
                },
            )
        )
    await publisher.deliver(events)


def _next_delay(policy: Any, attempt: int) -> float | None:
    if policy is None:
        return None
    initial = policy.initial_interval or timedelta(seconds=1)
    delay = initial.total_seconds() * (policy.backoff_coefficient ** (attempt - 1))
    if policy.maximum_interval:
        delay = min(delay, policy.maximum_interval.total_seconds())
    return round(delay, 3)
