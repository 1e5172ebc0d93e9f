"""``asyncio.run`` inside a busy worker: a loop finds its own tasks without walking the
process's.

CrewAI runs a fresh event loop per kickoff on the task's thread (``asyncio.run`` in
``Flow.kickoff`` and elsewhere). When that loop closes, asyncio cancels what is left of its
tasks, and in Python 3.11 it finds them by walking *every* task of the process (one global
weak set) and keeping those of this loop. A worker with a thousand tasks in flight holds
thousands of asyncio tasks on its own loop (the SDK's activity tasks, heartbeats), so every
CrewAI step paid a walk over all of them: 12% of the worker's GIL time in a 1,000-crew round
(``bench/load.py --profile``), growing with the square of what is in flight.

:func:`install` (once per worker process) makes the event loops created from then on
(``asyncio.run``'s) keep a weak set of the tasks made on them, and ``asyncio.all_tasks``
answer from it for such loops; every other loop is answered as before. A task built with
``asyncio.Task(...)`` directly, not through its loop, is not in the set: at ``asyncio.run``'s
end it is left, not cancelled (asyncio warns when it is collected while pending).

Those loops also share one pool of threads for ``asyncio.to_thread`` (CrewAI runs every
method of a task's agent executor, a Flow, there). A loop's own default executor starts a
thread for its first call, and ``asyncio.run``'s end joins it from yet another thread it
starts: two threads started and ended for every task attempt's kickoff (an ``asyncio.run``
with five such calls: 1.03 ms of CPU, 0.65 with the shared pool). The shared pool's threads
are reused, and end after a minute without work. A loop still waits, at its end, for the
calls it made (as its own executor's shutdown does), and refuses new ones after it.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import concurrent.futures
import threading
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from kasal.thread_pool import IdleThreadPool

_installed = False
_lock = threading.Lock()
_all_tasks = asyncio.tasks.all_tasks
#: The most ``asyncio.to_thread`` calls the loops run at once. A loop's own executor allows
#: ``cpu_count + 4``; the shared pool serves every loop of the process, and a call that
#: waited for a thread held by a call waiting on it would never run, so it is far above
#: any number of steps in flight.
STEP_THREADS = 100_000
_pool: IdleThreadPool | None = None


def step_pool() -> IdleThreadPool:
    """The process's pool for the loops' ``asyncio.to_thread`` calls."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = IdleThreadPool(STEP_THREADS, idle_seconds=60, thread_name_prefix="kasal-step")
        return _pool


class _LoopCalls(concurrent.futures.Executor):
    """One loop's view of :func:`step_pool`: what it submitted, and whether it is shut."""

    def __init__(self) -> None:
        self.pool = step_pool()
        self.pending: set[concurrent.futures.Future[Any]] = set()
        self.shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if self.shut:
            raise RuntimeError("Executor shutdown has been called")
        future = self.pool.submit(fn, *args, **kwargs)
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)
        return future


class OwnTasksLoop(asyncio.SelectorEventLoop):
    """An event loop that remembers the tasks made on it, and runs its default-executor
    calls on :func:`step_pool`."""

    def __init__(self) -> None:
        super().__init__()
        self.own_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._calls = _LoopCalls()

    def run_in_executor(  # type: ignore[override]
        self, executor: concurrent.futures.Executor | None, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        return super().run_in_executor(executor or self._calls, func, *args)

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        """Wait for this loop's calls (no thread is started or ended for it)."""
        self._calls.shut = True
        await super().shutdown_default_executor(*args, **kwargs)
        if pending := list(self._calls.pending):
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        name: str | None = None,
        context: Any = None,
    ) -> asyncio.Task[Any]:
        task = super().create_task(coro, name=name, context=context)
        self.own_tasks.add(task)
        return task


class _Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return OwnTasksLoop()


def all_tasks(loop: asyncio.AbstractEventLoop | None = None) -> set[asyncio.Task[Any]]:
    """``asyncio.all_tasks``: from the loop's own set where it keeps one."""
    if loop is None:
        loop = asyncio.get_running_loop()
    own = getattr(loop, "own_tasks", None)
    if not isinstance(own, weakref.WeakSet):
        return _all_tasks(loop)
    return {task for task in list(own) if not task.done()}


def install() -> bool:
    """Install the loop policy and ``all_tasks`` (once per process). False if it was
    installed already, or if the process runs another loop policy (uvloop, say), which is
    left alone."""
    global _installed
    with _lock:
        if (
            _installed
            or type(asyncio.get_event_loop_policy()) is not asyncio.DefaultEventLoopPolicy
        ):
            return False
        _installed = True
        asyncio.set_event_loop_policy(_Policy())
        asyncio.tasks.all_tasks = all_tasks  # what asyncio.run's clean-up calls
        asyncio.all_tasks = all_tasks
        return True
