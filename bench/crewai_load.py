"""Plain CrewAI for bench/load.py: the same crews, nothing durable, in one process.

    python -m bench.crewai_load BASE_URL COUNT TASKS

Runs ``COUNT`` crews of ``TASKS`` sequential tasks at once (a thread each, as CrewAI's
``kickoff`` blocks), one LLM call per task through CrewAI's own OpenAI provider against the
same OpenAI-compatible server as Kasal's crews, and prints one JSON line: wall seconds, the
process's CPU seconds and each crew's latency. What CrewAI itself costs per task is the
floor under Kasal's worker CPU: Kasal runs the same CrewAI code in every task attempt.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")


_LLMS: dict[str, Any] = {}


def shared_llm(base_url: str) -> Any:
    """One LLM for every crew of the process, as Kasal's workers share their provider
    clients: building one costs ~55 ms of CPU (two fresh HTTPS clients), which would
    otherwise count as CrewAI's per-task cost and flatter Kasal."""
    from crewai import LLM

    if base_url not in _LLMS:
        _LLMS[base_url] = LLM(model="openai/slow", base_url=base_url, api_key="bench")
    return _LLMS[base_url]


def one_crew(base_url: str, tasks: int) -> float:
    """One kickoff of a crew like bench/load.py's Kasal crew; its latency in seconds."""
    from crewai import Agent, Crew, Process, Task

    started = time.monotonic()
    llm = shared_llm(base_url)
    agent = Agent(role="Analyst", goal="Analyse", backstory="", llm=llm, verbose=False)
    crew = Crew(
        agents=[agent],
        tasks=[
            Task(description=f"Step {i}", expected_output="an answer", agent=agent)
            for i in range(tasks)
        ],
        process=Process.sequential,
        verbose=False,
    )
    crew.kickoff()
    return time.monotonic() - started


def main(base_url: str, count: int, tasks: int) -> None:
    one_crew(base_url, 1)  # warm-up: imports and first-use caches are not steady state
    cpu0, began = time.process_time(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        latencies = list(pool.map(lambda _: one_crew(base_url, tasks), range(count)))
    print(
        json.dumps(
            {
                "wall": time.monotonic() - began,
                "cpu": time.process_time() - cpu0,
                "latencies": latencies,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
