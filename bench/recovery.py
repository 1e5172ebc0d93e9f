"""Recovery after a crash: SIGKILL the worker in the middle of an LLM call, time the resume.

    .venv/bin/python bench/recovery.py [--trials 5] [--heartbeat 2]

Each trial runs a one-task crew whose task makes four LLM calls (three calculator steps and
the answer) against a local OpenAI-compatible stub server. The 2nd call hangs; the worker
running it is SIGKILLed while a standby worker (already started, so process start-up is not
counted) waits. Measured: the time from the kill to the provider seeing the task's next call
from the standby (the task running again), and how many provider calls were repeated.
The heartbeat timeout bounds how fast a dead worker is noticed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("KASAL_LLM_BASE_URLS", '["http://127.0.0.1:"]')  # the local stub
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kasal.client import EmbeddedTemporal, connect, free_port, start_execution  # noqa: E402
from kasal.testing.llm_stub import ModelBehaviour, StubLLMServer  # noqa: E402
from kasal.testing.specs import crew, stub_agent  # noqa: E402
from kasal.testing.worker_process import WorkerProcess  # noqa: E402


async def main(trials: int, heartbeat: float, crews: int) -> None:
    stub = StubLLMServer().start()
    recoveries: list[float] = []
    repeats: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = await EmbeddedTemporal(Path(tmp), port=free_port(), ui_port=None).start()
        client = await connect(server.address)
        queue = "bench-recovery"
        active = WorkerProcess(server.address, queue, Path(tmp) / "w-0")
        await asyncio.to_thread(active.start)
        background = []
        if crews:
            # Crews that keep the worker busy (one provider call in flight each, 1 s a call)
            # through every kill: their tasks recover on the standby too.
            stub.behaviours["busy"] = ModelBehaviour(latency=1.0)
            busy = crew(
                [{"name": f"b{i}", "description": f"Busy step {i}"} for i in range(40)],
                agents=[{**stub_agent("busy", stub.base_url), "tools": []}],
                timeout={"start_to_close": 300, "heartbeat": heartbeat},
            )
            background = [
                await start_execution(client, busy, task_queue=queue) for _ in range(crews)
            ]
            while len(stub.requests_for("busy", None)) < crews:
                await asyncio.sleep(0.1)
        try:
            for trial in range(trials):
                model = f"recover{trial}"
                stub.blocked.clear()
                stub.release.clear()
                stub.behaviours[model] = ModelBehaviour(tool_steps=3, block_at=2)
                spec = crew(
                    [{"name": "long", "description": f"Compute, trial {trial}"}],
                    agents=[stub_agent(model, stub.base_url)],
                    timeout={"start_to_close": 300, "heartbeat": heartbeat},
                )
                handle = await start_execution(client, spec, task_queue=queue)
                await asyncio.to_thread(stub.blocked.wait, 120)
                standby = WorkerProcess(server.address, queue, Path(tmp) / f"w-{trial + 1}")
                await asyncio.to_thread(standby.start)
                seen = len(stub.requests_for(model, None))
                active.kill()
                killed = time.monotonic()
                stub.release.set()
                while len(stub.requests_for(model, None)) <= seen:
                    await asyncio.sleep(0.005)
                recoveries.append(stub.requests_for(model, None)[seen].at - killed)
                await handle.result()
                prompts = Counter(r.prompt for r in stub.requests_for(model))
                repeats.append(sum(n - 1 for n in prompts.values()))
                active = standby
        finally:
            for handle in background:
                await handle.cancel()
            active.stop()
            server.stop()
            stub.stop()
    print(
        f"worker SIGKILL mid LLM call -> task running again on a standby worker ({trials} trials"
        f", {crews} other crews running)"
    )
    print(f"heartbeat timeout: {heartbeat:g} s")
    print(
        f"recovery: median {statistics.median(recoveries):.2f} s, "
        f"min {min(recoveries):.2f} s, max {max(recoveries):.2f} s"
    )
    print(f"provider calls repeated per kill: {repeats} (median {statistics.median(repeats):g})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--crews", type=int, default=0, help="other crews running meanwhile")
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.heartbeat, args.crews))
