"""Plain CrewAI for bench/memory.py: what CrewAI itself holds per task in flight.

    python -m bench.crewai_memory FAST_URL SLOW_URL COUNT

In one process, nothing durable: a few warm-up crews against ``FAST_URL`` (imports and
first-use caches are not what a task holds), then ``COUNT`` one-task crews kicked off at once
(a thread each, as CrewAI's ``kickoff`` blocks), each making its one LLM call through CrewAI's
own OpenAI provider against ``SLOW_URL`` (:mod:`kasal.testing.slow_llm`, which must answer
late enough that every call is held). Once that server holds all ``COUNT`` calls, prints one JSON
line: the process's RSS (MB) and threads when warm and with the calls held. A Kasal worker
runs the same CrewAI code in every task attempt, so this is the floor under its memory per
running execution.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.crewai_load import one_crew  # noqa: E402  (sets CrewAI's telemetry off first)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(fast_url: str, slow_url: str, count: int) -> None:
    for _ in range(3):
        one_crew(fast_url, 1)
    time.sleep(1)
    warm, warm_threads = rss_mb(), threading.active_count()
    crews = [
        threading.Thread(target=one_crew, args=(slow_url, 1), daemon=True) for _ in range(count)
    ]
    for thread in crews:
        thread.start()
    stats = slow_url.removesuffix("/v1") + "/stats"
    deadline = time.monotonic() + 300
    while httpx.get(stats).json()["in_flight"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server never held {count} calls")
        time.sleep(0.2)
    time.sleep(3)  # as bench/memory.py lets the worker settle
    print(
        json.dumps(
            {
                "warm": warm,
                "held": rss_mb(),
                "warm_threads": warm_threads,
                "held_threads": threading.active_count(),
            }
        ),
        flush=True,
    )
    # The calls are left to the server: CrewAI's step threads (not daemons) would hold the
    # interpreter's exit until they answer.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
