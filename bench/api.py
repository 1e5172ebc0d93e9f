"""Benchmarks of the API process: status latency, WebSocket fan-out, relayed events per second.

Runs a real Temporal dev server, one API process (uvicorn) and one worker process (`kasal
worker`), all on this machine, with SQLite as the app database, and prints the figures:

    .venv/bin/python bench/api.py [--clients 50] [--ws-clients 200]

- GET /executions/{id} latency (p50/p99) with 50 concurrent clients, for an execution that
  is running (answered by a workflow query) and one that has finished (from the database);
- WebSocket fan-out: 200 clients on one execution; delay from the event's timestamp (when
  the workflow or activity published it) to receipt by each client (p50/p99), and the
  spread of one event's arrival across the 200 clients (what fanning out costs);
- events per second through one API process: several executions at once, 200 clients
  spread over them; events relayed upstream per second and messages delivered per second.

The bench clients share the 2 cores with the API, worker and Temporal: the figures are
lower bounds of what the API does on a machine of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kasal.client import EmbeddedTemporal, free_port  # noqa: E402

ADMIN = ("bench@example.com", "bench-password-123")


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def spec(name: str, tasks: int, latency_ms: int = 0, human_input: bool = False) -> dict[str, Any]:
    """An offline crew of ``tasks`` tasks."""
    return {
        "name": name,
        "agents": [
            {
                "name": "analyst",
                "role": "Analyst",
                "goal": "Analyse",
                "llm": {"model": "offline/bench", "options": {"latency_ms": latency_ms}},
            }
        ],
        "tasks": [
            {
                "name": f"t{i}",
                "description": f"Task {i}",
                "expected_output": "text",
                "agent": "analyst",
                "human_input": human_input and i == 0,
            }
            for i in range(tasks)
        ],
    }


class Stack:
    """Temporal dev server, an API process and a worker process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.temporal = EmbeddedTemporal(
            data_dir=workdir / "temporal", port=free_port(), ui_port=None
        )
        self.api_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def start(self) -> None:
        await self.temporal.start()
        env = {
            **os.environ,
            "KASAL_TEMPORAL_ADDRESS": self.temporal.address,
            "KASAL_DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir / 'kasal.db'}",
            "KASAL_DATA_DIR": str(self.workdir),
            "KASAL_TASK_QUEUE": "bench",
            "KASAL_ADMIN_EMAIL": ADMIN[0],
            "KASAL_ADMIN_PASSWORD": ADMIN[1],
            "KASAL_EXECUTION_RATE_LIMIT": "100000/minute",
            "KASAL_LOGIN_RATE_LIMIT": "1000/minute",
            "CREWAI_DISABLE_TELEMETRY": "true",
            "OTEL_SDK_DISABLED": "true",
        }
        python = sys.executable
        log = open(self.workdir / "api.log", "wb")  # noqa: SIM115 - lives with the process
        self.processes.append(
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "uvicorn",
                    "api.main:app",
                    "--port",
                    str(self.api_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--timeout-keep-alive",
                    "30",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        await self._wait_ready()  # the API migrates the database before the worker writes
        wlog = open(self.workdir / "worker.log", "wb")  # noqa: SIM115
        self.processes.append(
            subprocess.Popen(
                [str(Path(python).with_name("kasal")), "worker"],
                cwd=ROOT,
                env=env,
                stdout=wlog,
                stderr=subprocess.STDOUT,
            )
        )

    async def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("the API did not become ready; see api.log")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.temporal.stop()


async def start_execution(http: httpx.AsyncClient, headers: dict, body: dict) -> str:
    response = await http.post("/api/v1/executions", json=body, headers=headers)
    response.raise_for_status()
    return response.json()["execution_id"]


async def wait_status(http, headers, execution_id: str, states: set[str]) -> None:
    for _ in range(1200):
        body = (await http.get(f"/api/v1/executions/{execution_id}", headers=headers)).json()
        if body["status"] in states:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{execution_id} never reached {states}")


async def status_latency(http, headers, execution_id: str, clients: int, per_client: int):
    """Latencies (ms) of GET /executions/{id} from ``clients`` concurrent clients."""
    latencies: list[float] = []
    statuses: set[int] = set()

    async def one_client() -> None:
        for _ in range(per_client):
            began = time.perf_counter()
            response = await http.get(f"/api/v1/executions/{execution_id}", headers=headers)
            latencies.append((time.perf_counter() - began) * 1000)
            statuses.add(response.status_code)

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(clients))), 300)
    elapsed = time.perf_counter() - began
    assert statuses == {200}, statuses
    return latencies, len(latencies) / elapsed


async def ws_client(
    url: str,
    token: str,
    execution_id: str,
    ready: asyncio.Event | None,
    received: list[tuple[int, float, float]],
) -> None:
    """Subscribe and record (offset, receipt time, event time) until the stream ends."""
    async with ws_connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, max_queue=None
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "authenticated"
        await ws.send(json.dumps({"type": "subscribe", "execution_id": execution_id}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        if ready is not None:
            ready.set()
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            if message["type"] == "stream_end":
                return
            stamp = datetime.fromisoformat(message["timestamp"]).timestamp()
            received.append((message["offset"], now, stamp))


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):7.1f} ms   p99 {percentile(values, 99):7.1f} ms   "
        f"(n={len(values)})"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kasal-bench-") as tmp:
        stack = Stack(Path(tmp))
        try:
            await stack.start()
            await run(stack, args)
        except BaseException:
            codes = [p.poll() for p in stack.processes]
            print(f"--- API and worker exit codes (None: running): {codes}", file=sys.stderr)
            for name in ("api.log", "worker.log"):
                log = Path(tmp) / name
                if log.exists():
                    print(f"--- {name} (last lines) ---", file=sys.stderr)
                    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            stack.stop()


async def run(stack: Stack, args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.clients + 10)
    async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=60) as http:
        login = await http.post(
            "/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]}
        )
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        print(
            f"Kasal API bench ({os.cpu_count()} cores; Temporal dev server, SQLite, "
            "one API process, one worker process)\n"
        )

        # -- 1. status latency ---------------------------------------------------------
        finished = await start_execution(http, headers, {"spec": spec("done", 2)})
        await wait_status(http, headers, finished, {"completed"})
        waiting = await start_execution(http, headers, {"spec": spec("waits", 1, human_input=True)})
        await wait_status(http, headers, waiting, {"waiting_for_input"})
        for label, execution_id in (
            ("running (workflow query)", waiting),
            ("finished (database)", finished),
        ):
            await status_latency(http, headers, execution_id, args.clients, 5)  # warm up
            latencies, rps = await status_latency(
                http, headers, execution_id, args.clients, args.requests
            )
            print(f"GET /executions/{{id}}, {args.clients} concurrent clients, {label}:")
            print(f"    {summary(latencies)}   {rps:6.0f} req/s")
        await http.post(f"/api/v1/executions/{waiting}/cancel", headers=headers)

        # -- 2. WebSocket fan-out to 200 clients on one execution ------------------------
        ws_url = stack.base_url.replace("http", "ws") + "/api/v1/ws"
        # The first LLM call waits 3 s, so every client is subscribed before the rest runs.
        fan = spec("fanout", args.tasks, latency_ms=0)
        fan["agents"].append(
            {
                **fan["agents"][0],
                "name": "slow",
                "llm": {"model": "offline/slow", "options": {"latency_ms": 3000}},
            }
        )
        fan["tasks"][0]["agent"] = "slow"
        execution_id = await start_execution(http, headers, {"spec": fan})
        received: list[list[tuple[int, float, float]]] = [[] for _ in range(args.ws_clients)]
        readies = [asyncio.Event() for _ in range(args.ws_clients)]
        tasks = [
            asyncio.create_task(ws_client(ws_url, token, execution_id, readies[i], received[i]))
            for i in range(args.ws_clients)
        ]
        await asyncio.gather(*(r.wait() for r in readies))
        all_subscribed = time.time()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        counts = {len(r) for r in received}
        offsets_ok = all([o for o, _, _ in r] == list(range(len(r))) for r in received)
        delays = [
            (now - stamp) * 1000 for r in received for _, now, stamp in r if stamp > all_subscribed
        ]
        by_offset: dict[int, list[float]] = {}
        for r in received:
            for offset, now, stamp in r:
                if stamp > all_subscribed:
                    by_offset.setdefault(offset, []).append(now)
        spreads = [(max(v) - min(v)) * 1000 for v in by_offset.values()]
        print(
            f"\nWebSocket fan-out: {args.ws_clients} clients on one execution, "
            f"{max(counts)} events each, complete and in order: "
            f"{offsets_ok and len(counts) == 1}"
        )
        print(f"    publish -> client receipt   {summary(delays)}")
        print(
            f"    spread across the clients   p50 {statistics.median(spreads):7.1f} ms   "
            f"p99 {percentile(spreads, 99):7.1f} ms   (per event, first to last client)"
        )

        # -- 3. events per second through one API process --------------------------------
        executions = [
            await start_execution(http, headers, {"spec": spec(f"load{i}", args.tasks)})
            for i in range(args.executions)
        ]
        per = args.ws_clients // args.executions
        received = [[] for _ in range(per * args.executions)]
        began = time.perf_counter()
        tasks = [
            asyncio.create_task(ws_client(ws_url, token, executions[i // per], None, received[i]))
            for i in range(per * args.executions)
        ]
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
        elapsed = time.perf_counter() - began
        upstream = sum(len(received[i * per]) for i in range(args.executions))
        delivered = sum(len(r) for r in received)
        print(
            f"\nThroughput: {args.executions} executions at once, {per} clients each, "
            f"{elapsed:.1f} s"
        )
        print(
            f"    {upstream / elapsed:7.0f} events/s relayed from upstream, "
            f"{delivered / elapsed:7.0f} messages/s delivered to clients"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--ws-clients", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=10, help="tasks per benchmark crew")
    parser.add_argument("--executions", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
