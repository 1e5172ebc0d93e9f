"""How soon a cancel reaches a task blocked in a provider call while many run, and what the
running tasks' heartbeats cost the Temporal server: a server that pushes cancels to the
worker running the task (Temporal's worker commands, the embedded default) against one
where cancels ride on heartbeats, in the same run.

    .venv/bin/python bench/cancel.py [--running 200] [--cancels 10] [--hold 20]

For each kind: one embedded dev server, one ``kasal worker`` at its default settings, and an
OpenAI-compatible server (:mod:`kasal.testing.slow_llm`) that holds every call for 10
minutes. ``--running`` one-task crews (default heartbeat timeout, 10 s) start at once; once
the slow server holds all their calls, for ``--hold`` seconds nothing happens but the
tasks' heartbeats (counted on the server, with its CPU). Then ``--cancels`` of them are
cancelled one after another, each timed from the request until the workflow has closed
(p50, max); the rest are cancelled together at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.load import cpu_seconds, server_requests  # noqa: E402
from bench.memory import llm_server, serving  # noqa: E402
from kasal.client import EmbeddedTemporal, connect, free_port, start_execution  # noqa: E402
from kasal.exceptions import ExecutionCancelledError  # noqa: E402
from kasal.testing.specs import crew  # noqa: E402
from kasal.testing.worker_process import WorkerProcess  # noqa: E402


async def one_kind(push: bool, running: int, cancels: int, hold: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        metrics_port = free_port()
        server = await EmbeddedTemporal(
            Path(tmp),
            port=free_port(),
            ui_port=None,
            metrics_port=metrics_port,
            push_cancels=push,
        ).start()
        assert server.process is not None
        llm_port = free_port()
        llm = llm_server(llm_port, 600)
        queue = f"cancel-{uuid.uuid4().hex[:6]}"
        worker = WorkerProcess(
            server.address, queue, Path(tmp) / "worker", KASAL_LLM_BASE_URLS='["http://127.0.0.1:"]'
        )
        try:
            await asyncio.to_thread(worker.start)
            client = await connect(server.address)
            agent = {
                "name": "analyst",
                "role": "Analyst",
                "goal": "Analyse",
                "llm": {"model": "compatible/slow", "base_url": f"http://127.0.0.1:{llm_port}/v1"},
            }
            spec = crew([{"name": "think", "description": "Think"}], agents=[agent])
            async with httpx.AsyncClient() as http:
                await serving(http, llm_port)

                async def in_flight() -> int:
                    stats = (await http.get(f"http://127.0.0.1:{llm_port}/stats")).json()
                    return int(stats["in_flight"])

                handles = await asyncio.gather(
                    *(start_execution(client, spec, task_queue=queue) for _ in range(running))
                )
                began = time.monotonic()
                while await in_flight() < running and time.monotonic() - began < 300:
                    await asyncio.sleep(0.2)
                held = await in_flight()
                before = await server_requests(http, metrics_port)
                cpu0 = cpu_seconds(server.process.pid)
                await asyncio.sleep(hold)
                cpu = cpu_seconds(server.process.pid) - cpu0
                made = await server_requests(http, metrics_port) - before
                beats = made["rpc RecordActivityTaskHeartbeat"]
                took = []
                for handle in handles[:cancels]:
                    asked = time.monotonic()
                    await handle.cancel()
                    with contextlib.suppress(ExecutionCancelledError):
                        await handle.result()
                    took.append(time.monotonic() - asked)
                await asyncio.gather(*(h.cancel() for h in handles[cancels:]))
        finally:
            worker.kill()
            llm.kill()
            server.stop()
    kind = "pushed cancels   " if push else "heartbeat cancels"
    return (
        f"{kind}  {held}/{running} calls held: {beats / hold:6.1f} heartbeats/s, "
        f"server CPU {cpu / hold * 1000:5.0f} ms/s; cancel to closed p50 "
        f"{statistics.median(took):5.2f} s, max {max(took):5.2f} s ({len(took)} cancels)"
    )


async def main(running: int, cancels: int, hold: float) -> None:
    print(f"{running} one-task crews each blocked in a provider call, one worker", flush=True)
    for push in (True, False):
        print(await one_kind(push, running, cancels, hold), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--running", type=int, default=200)
    parser.add_argument("--cancels", type=int, default=10)
    parser.add_argument("--hold", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(main(args.running, args.cancels, args.hold))
