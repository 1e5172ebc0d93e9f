"""Worker memory: RSS idle, and per running execution (goal: <= 300 MB idle, <= +100 MB per
1,000 running executions).

    .venv/bin/python bench/memory.py [--crews 200,500,1000] [--latency 30] [--tasks 1]

One embedded Temporal dev server, one ``kasal worker`` process at its default settings, and
two OpenAI-compatible servers (:mod:`kasal.testing.slow_llm`): a fast one for the warm-up and
one answering after ``--latency`` seconds, so executions stay in flight. Printed:

- the worker's RSS once ready (``idle``) and after a warm-up of a few crews (``warm``), the
  steady state every later figure is measured from;
- for each count N: N executions started at once; once the slow server holds all N LLM calls
  (every execution has a task in flight), the worker's RSS and threads, and the growth over
  ``warm`` in MB per 1,000 running executions. The executions then finish and the worker
  settles before the next count.
- beside each count, plain CrewAI's own figure, measured first in a process of its own
  (``bench/crewai_memory.py``, skipped with ``--no-crewai``): N one-task crews kicked off at
  once through CrewAI's OpenAI provider, every call held, RSS growth over warm. Every Kasal
  attempt runs that same CrewAI code, so it is the floor under Kasal's figure.
- beside each count, bare Temporal's figure (skipped with ``--no-bare``): a plain Temporal
  worker (``bench/bare_load.py``, the SDK's sandbox, activity slots for every execution) with
  N workflows started at once, each with one activity awaiting ``--latency`` seconds (an
  ``asyncio.sleep``: no thread), its RSS growth over its own warm state once every activity
  has started. It is the floor any Temporal-based design pays per running execution.
- ``idle again``: the worker ``--rest`` seconds after the last count's executions ended
  (its idle attempt threads end after a minute; quiet for 75 s, it collects what the
  executions left in cycles and trims its heap).

``--max-activities 1`` (the worker's ``KASAL_MAX_CONCURRENT_ACTIVITIES``) measures what the
workflows alone hold: one task runs, the other executions wait as cached workflows (the
count is measured ``--settle`` seconds after they start).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402

from bench.bare_load import spawn as spawn_bare  # noqa: E402
from kasal.client import EmbeddedTemporal, connect, free_port, start_execution  # noqa: E402
from kasal.testing.specs import crew  # noqa: E402
from kasal.testing.worker_process import WorkerProcess  # noqa: E402


def status(pid: int) -> dict[str, int]:
    """VmRSS (kB), RssAnon (kB) and Threads of a process now."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0])
    return out


def describe(pid: int) -> str:
    s = status(pid)
    return (
        f"RSS {s['VmRSS'] / 1024:6.1f} MB (anon {s['RssAnon'] / 1024:6.1f}, "
        f"file {s['RssFile'] / 1024:5.1f})  threads {s['Threads']:5}"
    )


def beside(what: str, other: dict[str, float], count: int, kasal_mb: float, name: str) -> str:
    """A line for another process measured beside the worker at ``count`` (its RSS and
    threads warm and held, from :func:`plain_crewai` or :func:`bare_temporal`), and the
    worker's growth (``kasal_mb``) against its own."""
    grown = other["held"] - other["warm"]
    return (
        f"      {what}: RSS {other['warm']:.1f} -> {other['held']:.1f} MB, threads "
        f"{other['warm_threads']:.0f} -> {other['held_threads']:.0f}  +{grown:6.1f} MB = "
        f"{grown / count * 1000:6.1f} MB per 1000; Kasal / {name} {kasal_mb / grown:.2f}x"
    )


async def plain_crewai(fast_port: int, count: int) -> dict[str, float]:
    """bench/crewai_memory.py in a process of its own: plain CrewAI's RSS with ``count``
    tasks in flight, against a slow server of its own that holds every call."""
    import json

    port = free_port()
    server = llm_server(port, 600)
    try:
        async with httpx.AsyncClient() as http:
            await serving(http, port)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bench.crewai_memory"]
            + [f"http://127.0.0.1:{p}/v1" for p in (fast_port, port)]
            + [str(count)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        server.kill()


async def serving(http: httpx.AsyncClient, port: int) -> None:
    """Wait (up to 30 s) until an :func:`llm_server` on ``port`` answers."""
    for _ in range(150):
        try:
            await http.get(f"http://127.0.0.1:{port}/stats")
            return
        except httpx.TransportError:
            await asyncio.sleep(0.2)


def llm_server(port: int, latency: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kasal.testing.slow_llm",
            "--port",
            str(port),
            "--latency",
            str(latency),
        ],
        cwd=ROOT,
    )


async def bare_temporal(
    client: Client, address: str, count: int, latency: float
) -> dict[str, float]:
    """bench/bare_load.py's worker, warmed, then ``count`` workflows each holding one activity
    of ``latency`` seconds: its RSS (MB) and threads warm and once every activity started."""
    from temporalio.api.enums.v1 import PendingActivityState

    queue = f"memory-bare-{uuid.uuid4().hex[:6]}"
    worker = await asyncio.to_thread(spawn_bare, address, queue, max(count, 100))
    try:

        async def start(seconds: float) -> WorkflowHandle[Any, Any]:
            return await client.start_workflow(
                "BenchBareLoad",
                args=[1, seconds],
                id=f"{queue}-{uuid.uuid4().hex}",
                task_queue=queue,
            )

        for _ in range(3):  # warm-up, as for the Kasal worker
            await asyncio.gather(*(h.result() for h in [await start(0.05) for _ in range(10)]))
        await asyncio.sleep(3)
        warm = status(worker.pid)
        handles = await asyncio.gather(*(start(latency) for _ in range(count)))
        began = time.monotonic()
        waiting = list(handles)
        while waiting and time.monotonic() - began < latency * 0.8:
            described = await asyncio.gather(*(h.describe() for h in waiting))
            waiting = [
                h
                for h, d in zip(waiting, described, strict=True)
                if not any(
                    a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                    for a in d.raw_description.pending_activities
                )
            ]
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)
        held = status(worker.pid)
        await asyncio.gather(*(h.terminate() for h in handles))
        return {
            "started": count - len(waiting),
            "warm": warm["VmRSS"] / 1024,
            "held": held["VmRSS"] / 1024,
            "warm_threads": warm["Threads"],
            "held_threads": held["Threads"],
        }
    finally:
        worker.kill()


async def main(
    counts: list[int],
    latency: float,
    tasks: int,
    max_activities: int | None,
    settle: float,
    crewai: bool = True,
    rest: float = 0,
    bare: bool = True,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = await EmbeddedTemporal(Path(tmp), port=free_port(), ui_port=None).start()
        fast_port, slow_port = free_port(), free_port()
        fast, slow = llm_server(fast_port, 0.05), llm_server(slow_port, latency)
        queue = f"memory-{uuid.uuid4().hex[:6]}"
        env = {"KASAL_LLM_BASE_URLS": '["http://127.0.0.1:"]'}
        if max_activities is not None:
            env["KASAL_MAX_CONCURRENT_ACTIVITIES"] = str(max_activities)
        worker = WorkerProcess(server.address, queue, Path(tmp) / "worker", **env)
        try:
            await asyncio.to_thread(worker.start)
            assert worker.process is not None
            pid = worker.process.pid
            client: Client = await connect(server.address)

            def spec(port: int):
                return crew(
                    [{"name": f"t{i}", "description": f"Step {i}"} for i in range(tasks)],
                    agents=[
                        {
                            "name": "analyst",
                            "role": "Analyst",
                            "goal": "Analyse",
                            "llm": {
                                "model": "compatible/slow",
                                "base_url": f"http://127.0.0.1:{port}/v1",
                            },
                        }
                    ],
                )

            async def run(port: int) -> None:
                await (await start_execution(client, spec(port), task_queue=queue)).result()

            await asyncio.sleep(3)
            print(f"idle (ready)   {describe(pid)}", flush=True)
            for _ in range(3):  # warm-up: first runs import and build what every run uses
                await asyncio.gather(*(run(fast_port) for _ in range(10)))
            await asyncio.sleep(3)
            warm = status(pid)["VmRSS"] / 1024
            print(f"idle (warm)    {describe(pid)}", flush=True)

            async with httpx.AsyncClient() as http:

                async def in_flight() -> int:
                    stats = (await http.get(f"http://127.0.0.1:{slow_port}/stats")).json()
                    return int(stats["in_flight"])

                for count in counts:
                    plain = await plain_crewai(fast_port, count) if crewai else None
                    floor = (
                        await bare_temporal(client, server.address, count, latency)
                        if bare
                        else None
                    )
                    began = time.monotonic()
                    handles = await asyncio.gather(
                        *(
                            start_execution(client, spec(slow_port), task_queue=queue)
                            for _ in range(count)
                        )
                    )
                    running = [asyncio.create_task(h.result()) for h in handles]
                    target = min(count, max_activities or count)
                    while await in_flight() < target:
                        if time.monotonic() - began > latency * 0.8:
                            break
                        await asyncio.sleep(0.2)
                    held = await in_flight()
                    await asyncio.sleep(settle)  # let the activities (or workflows) settle
                    rss = status(pid)["VmRSS"] / 1024
                    print(
                        f"{count:5} running ({held} calls held after "
                        f"{time.monotonic() - began:4.1f} s)  {describe(pid)}  "
                        f"+{rss - warm:6.1f} MB = {(rss - warm) / count * 1000:6.1f} MB "
                        "per 1000 running",
                        flush=True,
                    )
                    if plain is not None:
                        what = f"plain CrewAI, {count} tasks in flight"
                        print(beside(what, plain, count, rss - warm, "CrewAI"), flush=True)
                    if floor is not None:
                        what = f"bare Temporal, {floor['started']:.0f}/{count} activities started"
                        print(beside(what, floor, count, rss - warm, "bare"), flush=True)
                    if target < count:  # the rest would wait for the one slot: cancel
                        await asyncio.gather(*(h.cancel() for h in handles))
                    outcomes = await asyncio.gather(*running, return_exceptions=True)
                    failed = [o for o in outcomes if isinstance(o, BaseException)]
                    await asyncio.sleep(3)
                    print(
                        f"      after    {describe(pid)}  ({len(failed)} failed"
                        + (f", first: {failed[0]!r:.200})" if failed else ")"),
                        flush=True,
                    )
                if rest:
                    await asyncio.sleep(rest)
                    print(f"idle again ({rest:.0f} s later)  {describe(pid)}", flush=True)
        finally:
            worker.kill()
            fast.kill()
            slow.kill()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crews", default="200,500,1000")
    parser.add_argument("--latency", type=float, default=30.0)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--max-activities", type=int, help="the worker's activity slots")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    parser.add_argument(
        "--no-crewai", action="store_true", help="skip plain CrewAI's figure for each count"
    )
    parser.add_argument(
        "--no-bare", action="store_true", help="skip bare Temporal's figure for each count"
    )
    parser.add_argument(
        "--rest",
        type=float,
        default=100.0,
        help="after the last count, seconds idle before reading RSS again (0: skip)",
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.crews.split(",")]
    asyncio.run(
        main(
            counts,
            args.latency,
            args.tasks,
            args.max_activities,
            args.settle,
            crewai=not args.no_crewai,
            rest=args.rest,
            bare=not args.no_bare,
        )
    )
