"""The floor for bench/load.py and bench/memory.py: a bare workflow of N sequential
activities that each wait as long as the LLM would, run by a plain Temporal worker with the
SDK's default settings.

    python -m bench.bare_load ADDRESS TASK_QUEUE [MAX_ACTIVITIES]   # the worker, until killed

``MAX_ACTIVITIES``: its activity slots (the SDK's default, 100, if not given).
:func:`spawn` starts that worker as a process of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker


@activity.defn(name="bench_wait")
async def wait(seconds: float) -> str:
    """Waits like a provider call: I/O, no CPU."""
    await asyncio.sleep(seconds)
    return "done"


@workflow.defn(name="BenchBareLoad")
class BareLoadWorkflow:
    """``count`` sequential activities of ``seconds`` each."""

    @workflow.run
    async def run(self, count: int, seconds: float) -> int:
        for _ in range(count):
            await workflow.execute_activity(
                "bench_wait", seconds, start_to_close_timeout=timedelta(seconds=600)
            )
        return count


async def serve(address: str, task_queue: str, max_activities: int = 100) -> None:
    """A worker with the SDK's defaults (100 activity slots unless told), until killed."""
    client = await Client.connect(address)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareLoadWorkflow],
        activities=[wait],
        max_concurrent_activities=max_activities,
    ):
        print("bare worker ready", flush=True)
        await asyncio.Event().wait()


def spawn(address: str, task_queue: str, max_activities: int = 100) -> subprocess.Popen[str]:
    """The bare worker as a process of its own, once it polls ``task_queue``."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_load", address, task_queue, str(max_activities)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    if "ready" not in worker.stdout.readline():
        worker.kill()
        raise RuntimeError("the bare worker did not start")
    return worker


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4])))
