"""A thread pool whose idle threads end: a burst's threads do not stay for the worker's life.

A worker runs each task attempt on a thread of its own, up to
``KASAL_MAX_CONCURRENT_ACTIVITIES`` (1,000) at once. ``concurrent.futures.ThreadPoolExecutor``
keeps every thread it ever started until it is shut down, so after a burst of a thousand
crews the worker kept a thousand idle threads and the stack pages CrewAI's deep calls had
touched in them (``bench/memory.py``: 1,046 threads after the burst). :class:`IdleThreadPool`
works the same way (threads started on demand, up to ``max_workers``, reused while there is
work) but a thread that waits ``idle_seconds`` for work ends: 70 s after that burst the
worker had 40 threads, and 43 MB of RSS less.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class IdleThreadPool(Executor):
    """``ThreadPoolExecutor`` whose threads end after ``idle_seconds`` without work.

    The threads are daemons: a task that never returns (an abandoned provider call) does
    not hold the process's exit. ``shutdown(wait=True)`` still waits for running work.
    """

    def __init__(
        self, max_workers: int, *, idle_seconds: float = 60.0, thread_name_prefix: str = "pool"
    ) -> None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._idle_seconds = idle_seconds
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        #: Threads waiting for work that no queued item has been promised to; below zero,
        #: queued items waiting for a thread to finish (all ``max_workers`` busy).
        self._idle = 0
        self._shutdown = False
        self._names = itertools.count()

    @property
    def threads(self) -> int:
        """How many threads the pool has now."""
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if self._idle > 0 or len(self._threads) >= self._max_workers:
                # A waiting thread takes it, or (all busy) the next one to finish.
                self._idle -= 1
            else:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{next(self._names)}", daemon=True
                )
                self._threads.add(thread)
                thread.start()
        return future

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                item = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    # Work put since the wait ran out was promised to a waiting thread,
                    # perhaps this one: take it rather than leave it waiting.
                    if self._idle > 0 and self._queue.empty():
                        self._idle -= 1
                        self._threads.discard(me)
                        return
                continue
            if item is None:  # shutdown
                with self._lock:
                    self._threads.discard(me)
                return
            future, fn, args, kwargs = item
            del item
            result: Any = None
            error: BaseException | None = None
            running = future.set_running_or_notify_cancel()
            if running:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    error = exc
            # Waiting again before the caller hears of it: work it submits next (the next
            # step of a sequence) finds this thread rather than starting another.
            with self._lock:
                self._idle += 1
            if error is not None:
                future.set_exception(error)
            elif running:
                future.set_result(result)
            del future, fn, args, kwargs, result, error  # no reference cycle via the frame

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in threads:
                self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
