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
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import threading
import weakref
from collections.abc import Coroutine, Generator
from typing import Any

_installed = False
_lock = threading.Lock()
_all_tasks = asyncio.tasks.all_tasks


class OwnTasksLoop(asyncio.SelectorEventLoop):
    """An event loop that remembers the tasks made on it."""

    def __init__(self) -> None:
        super().__init__()
        self.own_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

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
