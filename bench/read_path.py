"""The read path: GET /api/v1/executions/{id} of a finished execution, beside a minimal
FastAPI endpoint doing the same database read, on SQLite and on PostgreSQL.

    .venv/bin/python bench/read_path.py [--backends sqlite,postgres] [--clients 50]
        [--rate 200] [--seconds 10] [--loadgen-procs 1]

For each backend it starts, as separate uvicorn processes (one worker each, as
``uvicorn api.main:app`` runs):

- the Kasal API on a fresh database (SQLite file, or a fresh database on the local
  PostgreSQL, 127.0.0.1:5432, dropped afterwards), with no Temporal (a finished execution is
  answered from the database alone);
- the baseline: :func:`baseline_app`, one FastAPI route with no auth and no middleware that
  reads the same row of the same table through an SQLAlchemy async session (Kasal's engine
  settings) and returns the same JSON.

One finished execution (3 tasks, a few KB of outputs, as the worker records it) is seeded in
the admin's personal group. Kasal is called as a user would: ``Authorization: Bearer
<access token>`` from /auth/login (``jwt``), and with an API key with the read scope
(``key``, ``X-API-Key``). Each target is measured in the same run:

- closed loop: ``--clients`` connections, each sending its next request when the last
  answered, for ``--seconds`` s: req/s, p50, p99;
- open loop: ``--rate`` requests/s offered on a fixed schedule for ``--seconds`` s; each
  latency runs from the request's *scheduled* send time, so a stalled server is charged for
  the requests it delayed (no coordinated omission): p50, p99, max;
- the server process's CPU per request (from /proc), which the other load on the 2 shared
  cores disturbs less than the latencies.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio (uvloop), in
``--loadgen-procs`` separate processes: about 40 us of CPU per request, so one process is
far from being the bottleneck (its CPU use is printed). It still shares the 2 cores with the
server (and PostgreSQL): the figures are lower bounds of what the API does on cores of its
own. Compare Kasal with the baseline of the same run only.

Measured on this machine (2 cores shared with other agents' benchmarks: load average 5-160
during the runs, so latencies swing by 10x between runs and only figures of one run compare;
the server's CPU per request is the steadiest figure). One API process; 50 clients closed
loop; 200 req/s open loop; "before" is commit f91ba10 (`--before`), in the same run; the
baseline uses Kasal's engine, so it gained from the engine changes too:

- measured, run 1 (10 s), server CPU ms per request, before -> after (baseline):
  SQLite token 3.86 -> 1.85 (1.14), SQLite key 6.12 -> 3.63; PostgreSQL token 5.12 -> 2.46
  (2.00), PostgreSQL key 3.75 -> 2.56.
- measured, run 2 (8 s), the quietest SQLite section: token 285 -> 509 req/s closed loop
  (baseline 814), open loop p50/p99 4.7/210 ms -> 2.6/5.3 ms (baseline 1.7/4.0: 1.56x,
  1.33x); key 206 -> 400 req/s, p50/p99 149/2798 -> 4.2/148 ms; CPU ms/req token
  3.85 -> 2.12 (1.35), key 5.36 -> 2.52. PostgreSQL in that run was swamped (the baseline's
  open-loop p50 was 23 s): CPU ms/req token 5.10 -> 2.64 (1.80), key 5.14 -> 2.95.
- measured, run 3 (PostgreSQL only, 6 s, load average ~45): token 262 -> 293 req/s closed
  loop (baseline 518), open loop p50/p99 149/1699 -> 4.6/240 ms (baseline 3.3/14.3); key
  102 -> 289 req/s, p50/p99 1823/6388 -> 87/796 ms; CPU ms/req token 3.41 -> 2.86 (1.62),
  key 8.02 -> 2.75.
- where a token's status read went before (py-spy, SQLite): 4 hops to aiosqlite's thread
  (user, roles, execution, COMMIT) where the baseline makes 2; a thread-pool hop for the
  ``def`` state dependency (~10%); the JWT's HMAC and claims (~5%); JSON of the unused
  result and spec columns (~4%); the answer validated three times. On PostgreSQL also a
  pre-ping of BEGIN, ``;`` and ROLLBACK on every checkout (~11%). After: a token's read is
  one statement (the row; who the token is comes from a 1 s cache) and no COMMIT hop; a key's
  read is two statements (key, user and roles in one; the row).
- a later run (a quiet machine, load average ~1, 10 s, ``--before`` = 68cf6ee), token:
  PostgreSQL 1,346 -> 1,409 req/s (baseline 1,687), CPU ms/req 0.74 -> 0.70 (0.58);
  SQLite 1,052 -> 1,161 req/s (1,259), 1.05 -> 0.97 (0.90); open-loop p99 3.3 -> 3.6 ms
  and 2.5 -> 2.4 ms. Where the difference went, timed in-process (the ASGI app called
  directly, PostgreSQL, min of 6 rounds of 1,500): 0.739 -> 0.661 ms of CPU per read
  (baseline 0.54): the principal's three security sub-dependencies ~30 us (FastAPI solves
  each one on every request), the 23 routes tried before this one ~20 us, validating the
  answer in three parts ~25 us.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN = ("bench@example.com", "bench-password-123")
SECRET = "bench-secret-key-0123456789abcdef0123456789abcdef"


# -- the baseline --------------------------------------------------------------------------


def baseline_app() -> Any:
    """The minimal endpoint: ``GET /executions/{id}`` reads the row through an async session
    and returns the JSON Kasal returns; no auth, no middleware (``uvicorn --factory``)."""
    from fastapi import FastAPI, HTTPException

    from kasal.db.engine import create_engine, session_factory
    from kasal.db.models import Execution

    engine = create_engine(os.environ["KASAL_DATABASE_URL"])
    sessions = session_factory(engine)
    app = FastAPI()

    @app.get("/executions/{execution_id}")
    async def read(execution_id: str) -> dict[str, Any]:
        async with sessions() as session:
            row = await session.get(Execution, execution_id)
        if row is None:
            raise HTTPException(404)
        tasks = (row.status_detail or {}).get("tasks", [])
        done = [t["json_dict"] for t in tasks if t.get("json_dict") is not None]
        return {
            "id": row.id,
            "workflow_id": row.workflow_id,
            "crew_id": row.crew_id,
            "crew_name": row.crew_name,
            "status": row.status,
            "group_id": row.group_id,
            "created_at": row.created_at,
            "started_at": row.started_at,
            "ended_at": row.ended_at,
            "error": row.error,
            "replay_of": row.replay_of,
            "replay_from_task": row.replay_from_task,
            "schedule_id": row.schedule_id,
            "stop_requested_by": row.stop_requested_by,
            "stop_requested_at": row.stop_requested_at,
            "stop_mode": row.stop_mode,
            "inputs": row.inputs,
            "token_usage": row.token_usage,
            "tasks": tasks,
            "event_count": row.event_count,
            "json": done[-1] if done else None,
        }

    return app


# -- the load generator (runs in its own processes) ----------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a prepared GET and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        """Send ``raw``; the status code once the whole body has arrived."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        at = head.lower().find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"no Content-Length in {head!r}")
        end = head.index(b"\r\n", at + 2)
        await self.reader.readexactly(int(head[at + 17 : end]))
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Job:
    """What one load-generator process does."""

    port: int
    raw: bytes
    mode: str  # "closed" or "open"
    seconds: float
    clients: int = 0  # closed loop
    rate: float = 0.0  # open loop, requests/s from this process
    phase: float = 0.0  # open loop: this process's first send, seconds after start
    start_wall: float = 0.0  # time.time() at which every process starts


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` in this process: latencies (ms), answered count, statuses, CPU used."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    cpu = os.times()
    result = asyncio.run(_closed(job) if job.mode == "closed" else _open(job))
    after = os.times()
    result["cpu"] = (after.user - cpu.user) + (after.system - cpu.system)
    return result


async def _until_start(job: Job) -> float:
    """Sleep until the shared start; the perf_counter() value at it."""
    delay = job.start_wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    return time.perf_counter()


async def _closed(job: Job) -> dict[str, Any]:
    connections = [await Connection.open(job.port) for _ in range(job.clients)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    began = await _until_start(job)
    deadline = began + job.seconds

    async def client(conn: Connection) -> None:
        while (now := time.perf_counter()) < deadline:
            status = await conn.request(job.raw)
            latencies.append((time.perf_counter() - now) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - began
    for conn in connections:
        conn.close()
    return {"latencies": latencies, "statuses": statuses, "elapsed": elapsed}


async def _open(job: Job) -> dict[str, Any]:
    idle = [await Connection.open(job.port) for _ in range(8)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    began = await _until_start(job)
    count = int(job.seconds * job.rate)
    interval = 1 / job.rate
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        conn = idle.pop() if idle else await Connection.open(job.port)
        status = await conn.request(job.raw)
        latencies.append((time.perf_counter() - scheduled) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        idle.append(conn)

    for i in range(count):
        scheduled = began + job.phase + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    for conn in idle:
        conn.close()
    return {"latencies": latencies, "statuses": statuses, "elapsed": time.perf_counter() - began}


# -- measuring -----------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """The load-generator processes, started once and reused."""

    def __init__(self, procs: int) -> None:
        self.procs = procs
        self.pool = multiprocessing.get_context("spawn").Pool(procs)

    def run(self, jobs: list[Job]) -> list[dict[str, Any]]:
        return self.pool.map(run_job, jobs)

    def closed(self, port: int, raw: bytes, clients: int, seconds: float) -> dict[str, Any]:
        start = time.time() + 0.5
        per = [clients // self.procs + (i < clients % self.procs) for i in range(self.procs)]
        jobs = [Job(port, raw, "closed", seconds, clients=n, start_wall=start) for n in per]
        return merge(self.run(jobs))

    def open(self, port: int, raw: bytes, rate: float, seconds: float) -> dict[str, Any]:
        start = time.time() + 0.5
        jobs = [
            Job(
                port,
                raw,
                "open",
                seconds,
                rate=rate / self.procs,
                phase=i / rate,
                start_wall=start,
            )
            for i in range(self.procs)
        ]
        return merge(self.run(jobs))

    def close(self) -> None:
        self.pool.terminate()


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in results for x in r["latencies"]]
    statuses: dict[int, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    elapsed = max(r["elapsed"] for r in results)
    return {
        "latencies": latencies,
        "statuses": statuses,
        "rps": len(latencies) / elapsed,
        "client_cpu": sum(r["cpu"] for r in results),
        "elapsed": elapsed,
    }


@dataclass
class Row:
    """One line of the table."""

    backend: str
    target: str
    closed_rps: float
    closed_p50: float
    closed_p99: float
    open_p50: float
    open_p99: float
    open_max: float
    cpu_ms: float  # server CPU per request, closed loop
    client_cpu: float  # load generator's CPU share of the closed loop's wall time


def measure(
    load: Load,
    backend: str,
    target: str,
    port: int,
    pid: int,
    path: str,
    headers: dict[str, str],
    args: argparse.Namespace,
) -> Row:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    load.closed(port, raw, args.clients, 1.0)  # warm up: connections, caches, pools
    spy = None
    if args.profile:
        # py-spy (not a dependency: `uv pip install py-spy`), collapsed stacks per target.
        slug = re.sub(r"\W+", "", target)
        name = f"{args.profile}-{backend}-{slug}.txt"
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw"]
            + ["--nonblocking", "-o", name, "-p", str(pid), "-d", str(int(args.seconds))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    cpu = process_cpu(pid)
    closed = load.closed(port, raw, args.clients, args.seconds)
    cpu = process_cpu(pid) - cpu
    if spy is not None:
        spy.wait(30)
    opened = load.open(port, raw, args.rate, args.seconds)
    for run in (closed, opened):
        if set(run["statuses"]) != {200}:
            raise RuntimeError(f"{backend} {target}: statuses {run['statuses']}")
    expected = int(args.rate * args.seconds)
    if len(opened["latencies"]) != expected:
        raise RuntimeError(f"open loop answered {len(opened['latencies'])} of {expected}")
    return Row(
        backend,
        target,
        closed["rps"],
        percentile(closed["latencies"], 50),
        percentile(closed["latencies"], 99),
        percentile(opened["latencies"], 50),
        percentile(opened["latencies"], 99),
        max(opened["latencies"]),
        cpu * 1000 / len(closed["latencies"]),
        closed["client_cpu"] / closed["elapsed"],
    )


# -- the processes -------------------------------------------------------------------------


def environment(url: str, workdir: Path) -> dict[str, str]:
    from kasal.client import free_port

    return {
        **os.environ,
        "KASAL_DATABASE_URL": url,
        "KASAL_DATA_DIR": str(workdir),
        # Nothing listens there: finished executions need no Temporal.
        "KASAL_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "KASAL_ADMIN_EMAIL": ADMIN[0],
        "KASAL_ADMIN_PASSWORD": ADMIN[1],
        "KASAL_SECRET_KEY": SECRET,
        "KASAL_API_KEY_RATE_LIMIT": "1000000/minute",
        "KASAL_LOGIN_RATE_LIMIT": "1000/minute",
        "OTEL_SDK_DISABLED": "true",
        "CREWAI_DISABLE_TELEMETRY": "true",
    }


@contextlib.contextmanager
def uvicorn(
    app: str, env: dict[str, str], log: Path, factory: bool = False, root: Path = ROOT
) -> Any:
    """One uvicorn process serving ``app`` from the code under ``root``; yields (port,
    process)."""
    from kasal.client import free_port

    if root != ROOT:
        env = {**env, "PYTHONPATH": str(root)}

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "60"]
    if factory:
        command.append("--factory")
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_ready(port: int, path: str, log: Path, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(path)).status_code < 500:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{path} on port {port} never answered; see {log}")


@contextlib.asynccontextmanager
async def database(backend: str, workdir: Path) -> AsyncIterator[str]:
    """A fresh database's URL."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'kasal.db'}"
        return
    from kasal.testing.db import postgres_database

    async with postgres_database() as url:
        yield url


def finished_execution(owner_id: str, group_id: str) -> Any:
    """A finished 3-task execution as the worker's record activity leaves it."""
    from kasal.db.models import Execution, new_id, utcnow

    now = utcnow()
    tasks = [
        {
            "name": f"t{i}",
            "agent": "analyst",
            "state": "completed",
            "attempts": 1,
            "started_at": (now + timedelta(seconds=i)).isoformat(),
            "ended_at": (now + timedelta(seconds=i + 1)).isoformat(),
            "output_summary": f"Summary of task {i}. " * 10,
            "error": None,
            "token_usage": {
                "prompt_tokens": 120,
                "completion_tokens": 80,
                "total_tokens": 200,
                "requests": 1,
            },
            "reused_from": None,
            "json_dict": {"answer": i, "items": [f"item {j}" for j in range(5)]} if i else None,
        }
        for i in range(3)
    ]
    usage = {"prompt_tokens": 360, "completion_tokens": 240, "total_tokens": 600, "requests": 3}
    ident = new_id()
    spec = {
        "name": "bench",
        "agents": [{"name": "analyst", "role": "Analyst", "goal": "Analyse"}],
        "tasks": [
            {"name": f"t{i}", "description": f"Task {i}", "expected_output": "text"}
            for i in range(3)
        ],
    }
    return Execution(
        id=ident,
        workflow_id=f"kasal-exec-{ident}",
        owner_id=owner_id,
        group_id=group_id,
        crew_name="bench",
        status="completed",
        spec=spec,
        inputs={"topic": "read paths"},
        created_at=now,
        started_at=now,
        ended_at=now + timedelta(seconds=3),
        token_usage=usage,
        status_detail={
            "execution_id": ident,
            "crew_name": "bench",
            "state": "completed",
            "started_at": now.isoformat(),
            "ended_at": (now + timedelta(seconds=3)).isoformat(),
            "tasks": tasks,
            "token_usage": usage,
            "event_count": 24,
        },
        result={
            "output": "The final answer. " * 200,
            "tasks": [{"name": t["name"], "raw": "Output text. " * 200} for t in tasks],
        },
        event_count=24,
    )


async def seed(url: str, port: int) -> tuple[str, dict[str, dict[str, str]]]:
    """The finished execution's id, and the headers of each way of signing in."""
    import httpx
    from sqlalchemy import select

    from kasal.db.engine import create_engine, session_factory
    from kasal.db.models import User

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        login = await http.post(
            "/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]}
        )
        login.raise_for_status()
        jwt_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        groups = (await http.get("/api/v1/groups", headers=jwt_headers)).json()
        group_id = next(g["id"] for g in groups if g["personal"])
        made = await http.post(
            "/api/v1/keys", json={"name": "bench", "scopes": ["read"]}, headers=jwt_headers
        )
        made.raise_for_status()
        key_headers = {"X-API-Key": made.json()["key"]}
    engine = create_engine(url, pooled=False)
    try:
        async with session_factory(engine)() as session, session.begin():
            owner = await session.scalar(select(User.id).where(User.email == ADMIN[0]))
            assert owner is not None
            execution = finished_execution(owner, group_id)
            session.add(execution)
    finally:
        await engine.dispose()
    return execution.id, {"jwt": jwt_headers, "key": key_headers}


async def bench_backend(backend: str, load: Load, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kasal-read-") as tmp:
        workdir = Path(tmp)
        async with database(backend, workdir) as url:
            env = environment(url, workdir)
            async with contextlib.AsyncExitStack() as stack:
                log = workdir / "api.log"
                port, api = stack.enter_context(uvicorn("api.main:app", env, log))
                await wait_ready(port, "/healthz", log)  # after the lifespan: migrated, admin
                execution_id, auth = await seed(url, port)
                path = f"/api/v1/executions/{execution_id}"
                log = workdir / "baseline.log"
                base_port, base = stack.enter_context(
                    uvicorn("bench.read_path:baseline_app", env, log, factory=True)
                )
                await wait_ready(base_port, "/executions/none", log)
                targets: list[tuple[str, int, int, str, dict[str, str]]] = [
                    ("baseline", base_port, base.pid, f"/executions/{execution_id}", {})
                ]
                before = None
                if args.before:
                    log = workdir / "api-before.log"
                    before = stack.enter_context(
                        uvicorn("api.main:app", env, log, root=Path(args.before))
                    )
                    await wait_ready(before[0], "/healthz", log)
                for how in args.auth.split(","):
                    if before is not None:
                        targets.append(
                            (f"before ({how})", before[0], before[1].pid, path, auth[how])
                        )
                    targets.append((f"kasal ({how})", port, api.pid, path, auth[how]))
                for target, tport, pid, tpath, headers in targets:
                    rows.append(measure(load, backend, target, tport, pid, tpath, headers, args))
                    print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    f"{'backend':<9} {'target':<14} {'closed req/s':>12} {'p50 ms':>7} {'p99 ms':>7}   "
    f"{'open p50':>8} {'p99':>6} {'max':>6}   {'srv CPU ms/req':>14} {'client CPU':>10}"
)


def format_row(row: Row) -> str:
    return (
        f"{row.backend:<9} {row.target:<14} {row.closed_rps:12.0f} {row.closed_p50:7.1f} "
        f"{row.closed_p99:7.1f}   {row.open_p50:8.1f} {row.open_p99:6.1f} {row.open_max:6.1f}   "
        f"{row.cpu_ms:14.2f} {row.client_cpu * 100:9.0f}%"
    )


async def main(args: argparse.Namespace) -> None:
    load = Load(args.loadgen_procs)
    try:
        print(
            f"GET /executions/{{id}}, finished execution ({os.cpu_count()} cores shared; one "
            f"server process each; closed loop {args.clients} clients x {args.seconds:.0f} s; "
            f"open loop {args.rate:.0f} req/s x {args.seconds:.0f} s; "
            f"load generator: {args.loadgen_procs} process(es))\n"
        )
        print(HEADER, flush=True)
        rows: list[Row] = []
        for backend in args.backends.split(","):
            rows += await bench_backend(backend, load, args)
        print()
        for backend in args.backends.split(","):
            base = next(r for r in rows if r.backend == backend and r.target == "baseline")
            for row in rows:
                if row.backend == backend and row is not base:
                    print(
                        f"{backend} {row.target}: {row.closed_rps / base.closed_rps:.2f}x the "
                        f"baseline's req/s; open-loop p50 {row.open_p50 / base.open_p50:.2f}x, "
                        f"p99 {row.open_p99 / base.open_p99:.2f}x; CPU/req "
                        f"{row.cpu_ms / base.cpu_ms:.2f}x"
                    )
    finally:
        load.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--auth", default="jwt,key", help="how Kasal is called: jwt, key")
    parser.add_argument("--clients", type=int, default=50, help="closed-loop connections")
    parser.add_argument("--rate", type=float, default=200, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--loadgen-procs", type=int, default=1)
    parser.add_argument(
        "--before",
        default="",
        help="also measure the Kasal API from this copy of the code (e.g. `git archive REV`)",
    )
    parser.add_argument(
        "--profile", default="", help="py-spy each server under the closed loop: file prefix"
    )
    asyncio.run(main(parser.parse_args()))
