"""The cyclic garbage collector of a long-running Kasal process (worker or API).

CPython's collector looks for cycles generation by generation. A full collection walks
every tracked object, and it runs once the objects promoted since the last one reach a
quarter of the rest. A worker starts with some 350,000 objects (CrewAI, LiteLLM, Temporal,
pydantic models) and a full pass over them costs about 0.2 s of the GIL; with a thousand
crews in flight the heap is several times larger. Every full collection then stops the
event loop (heartbeats, workflow activations) for up to a second, and the default young
threshold (700 allocations) promotes the objects of every in-flight call, so such
collections keep coming. In one 200 + 1,000-crew run (``bench/load.py``) a worker spent 27 s
in the collector, 20.5 s of it in 33 full collections, the longest 1.1 s; settled with a
young threshold of 50,000, 7.5 s, of it 0.7 s in 7 full collections.

:func:`settle` is called once a process has started: what start-up made (modules, classes,
settings, the app) lives as long as the process, so it is moved out of the collector's
sight (:func:`gc.freeze`), and the young threshold is raised so that short-lived objects
die by reference counting before they are ever promoted.

The price is paid when work stops: what a burst left in cycles (finished workflows'
sandboxed modules, CrewAI's executors) was promoted while it ran, and only a full
collection frees it, which an idle process never starts. 70 s after 500 executions had
ended, a worker still held 538,000 tracked objects (84,000 before them) and 480 MB of RSS.
:func:`tidy_when_quiet` runs that collection once the process goes quiet after work, and
hands the C allocator's free pages back to the system (``malloc_trim``, glibc only).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import threading
import time

from kasal import metrics

log = logging.getLogger(__name__)

_settled = False
_lock = threading.Lock()


def settle(young_threshold: int) -> bool:
    """Count the collector's pauses (``kasal_gc_pause_seconds``); then collect once, freeze
    what survives, and collect the youngest generation only every ``young_threshold`` net
    allocations (0: leave the collector as it is).

    Once per process: later calls (a second app in one test process, say) do nothing and
    return False.
    """
    global _settled
    with _lock:
        if _settled:
            return False
        _settled = True
    gc.callbacks.append(_observe_pause)
    if young_threshold <= 0:
        return False
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    log.debug(
        "heap settled: %d objects frozen, young threshold %d",
        gc.get_freeze_count(),
        young_threshold,
    )
    return True


async def tidy_when_quiet(
    *,
    every: float = 10.0,
    quiet_for: float = 75.0,
    quiet_share: float = 0.02,
    after_cpu: float = 5.0,
) -> None:
    """For ever: once this process has used under ``quiet_share`` of a CPU for
    ``quiet_for`` seconds (looked at every ``every``), having used at least ``after_cpu``
    seconds of CPU since it last tidied (or started), collect every generation and trim the
    C heap.

    The default waits out the worker's idle threads (they end after a minute), so the
    stacks they free are trimmed too. Under load the collector's own thresholds decide, as
    before: a busy process is never paused by this. One collection costs what a full one
    does (a fraction of a second), when nobody waits for the process.
    """
    tidied = last = time.process_time()
    quiet_since = time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.process_time()
        if now - last >= quiet_share * every:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_for and now - tidied >= after_cpu:
            freed = gc.collect()
            trimmed = _trim()
            log.debug("quiet: %d objects collected, heap trimmed: %s", freed, trimmed)
            now = tidied = time.process_time()
        last = now


def _trim() -> bool:
    """Give the C allocator's free pages back to the system, where glibc can."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return False


_began = [0.0]


def _observe_pause(phase: str, info: dict[str, int]) -> None:
    # Collections run with the GIL held, one at a time: one start time is enough.
    if phase == "start":
        _began[0] = time.perf_counter()
    else:
        pause = time.perf_counter() - _began[0]
        metrics.GC_PAUSES.labels(generation=str(info["generation"])).observe(pause)
