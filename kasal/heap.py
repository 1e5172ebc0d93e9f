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
"""

from __future__ import annotations

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


_began = [0.0]


def _observe_pause(phase: str, info: dict[str, int]) -> None:
    # Collections run with the GIL held, one at a time: one start time is enough.
    if phase == "start":
        _began[0] = time.perf_counter()
    else:
        pause = time.perf_counter() - _began[0]
        metrics.GC_PAUSES.labels(generation=str(info["generation"])).observe(pause)
