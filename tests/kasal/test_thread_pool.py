"""The worker's attempt threads: started on demand, reused, and ended once idle, so a burst's
threads (and the memory their stacks hold) do not stay for the worker's life."""

from __future__ import annotations

import threading
import time

import pytest

from kasal.thread_pool import IdleThreadPool


def _eventually(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_burst_gets_a_thread_each_and_they_end_once_idle():
    pool = IdleThreadPool(50, idle_seconds=0.3, thread_name_prefix="burst")
    release = threading.Event()
    started = threading.Semaphore(0)

    def hold() -> str:
        started.release()
        release.wait()
        return threading.current_thread().name

    futures = [pool.submit(hold) for _ in range(20)]
    for _ in range(20):
        assert started.acquire(timeout=5)  # all 20 run at once: none waits for another
    assert pool.threads == 20
    release.set()
    names = {f.result(timeout=5) for f in futures}
    assert len(names) == 20 and all(n.startswith("burst_") for n in names)
    _eventually(lambda: pool.threads == 0)
    _eventually(lambda: not [t for t in threading.enumerate() if t.name in names])
    # Still usable afterwards: a new thread is started for new work.
    assert pool.submit(lambda: 42).result(timeout=5) == 42
    pool.shutdown()


def test_sequential_work_reuses_one_thread():
    pool = IdleThreadPool(10, idle_seconds=5)
    idents = {pool.submit(threading.get_ident).result(timeout=5) for _ in range(30)}
    assert len(idents) == 1 and pool.threads == 1
    pool.shutdown()
    assert pool.threads == 0


def test_past_max_workers_work_waits_for_a_thread_and_still_runs():
    pool = IdleThreadPool(2, idle_seconds=0.2)
    release = threading.Event()
    busy = [pool.submit(release.wait) for _ in range(2)]
    queued = [pool.submit(lambda i=i: i) for i in range(5)]
    time.sleep(0.4)  # longer than idle_seconds: no thread may leave while work waits
    assert pool.threads == 2 and not any(f.done() for f in queued)
    release.set()
    assert [f.result(timeout=5) for f in queued] == list(range(5))
    assert all(f.result(timeout=5) for f in busy)
    _eventually(lambda: pool.threads == 0)
    pool.shutdown()


def test_errors_reach_the_caller_and_the_thread_carries_on():
    pool = IdleThreadPool(1, idle_seconds=5)

    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        pool.submit(boom).result(timeout=5)
    assert pool.submit(lambda: "after").result(timeout=5) == "after"
    assert pool.threads == 1
    pool.shutdown()


def test_shutdown_waits_for_running_work_then_refuses_more():
    pool = IdleThreadPool(4, idle_seconds=30)
    finished: list[int] = []

    def slow(i: int) -> None:
        time.sleep(0.2)
        finished.append(i)

    for i in range(4):
        pool.submit(slow, i)
    began = time.monotonic()
    pool.shutdown(wait=True)
    assert sorted(finished) == [0, 1, 2, 3] and time.monotonic() - began >= 0.15
    assert pool.threads == 0  # idle threads were woken, not left to their 30 s wait
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_shutdown_can_cancel_what_has_not_started():
    pool = IdleThreadPool(1, idle_seconds=30)
    release = threading.Event()
    running = pool.submit(release.wait, 5)
    waiting = [pool.submit(lambda: None) for _ in range(3)]
    time.sleep(0.1)
    release.set()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result() is True
    assert all(f.cancelled() for f in waiting)
