"""Many crews in flight on one worker: Kasal against bare Temporal, in the same run.

    .venv/bin/python bench/load.py [--crews 50,200,1000] [--latency 1.0] [--tasks 3]
        [--server-profile DIR] [--profile DIR] [--no-crewai]

One embedded Temporal dev server, one OpenAI-compatible server that answers every request
after ``--latency`` seconds (asynchronous: it holds thousands of requests at once), and two
worker processes at their default settings:

- ``bare``: a plain Temporal worker running a workflow of ``--tasks`` sequential activities
  that each wait ``--latency`` seconds (the floor any Temporal-based design pays);
- ``kasal``: ``kasal worker``, running crews of ``--tasks`` sequential tasks with one LLM
  call each against that server (the real provider path: CrewAI's OpenAI client over HTTP);
- ``crewai``: the same crews on plain CrewAI in one process, nothing durable (a thread per
  crew; ``bench/crewai_load.py``): what CrewAI's own code costs per task, which every Kasal
  task attempt runs too. Its "worker CPU" is that process's.

- ``paced``: the bare crews again, their starts spread so that the round lasts as long as
  Kasal's did. A server's CPU per task grows when the same work is spread over more time
  (fewer requests share each wake-up, fewer share each database transaction): in one run,
  12.2 -> 16.3 ms per bare task at 200 crews and 12.0 -> 16.9 at 1,000 (another run: 10.9
  -> 12.4 at 200). This row is the floor for Kasal at Kasal's pace.

For each count, all crews start at once (but ``paced``'s). Printed per kind: wall time
(until visibility shows every crew closed), crews/s, p50/p99 crew latency (the server's start
to close), worker and server CPU per task (from /proc; also net of what the idle server uses
over the round), the worker's RSS, and for Kasal the provider requests (which must equal the
tasks: nothing paid twice) and the worker's log lines of trouble: deadlock timeouts, failed
workflow tasks, timeouts, retried attempts (a healthy worker logs none; the round's log is
kept in a file when it does), and the time the worker spent in Python's garbage collector
(its ``kasal_gc_pause_seconds``). ``--server-profile DIR`` samples the dev server with
``perf`` in each Temporal round and prints its CPU per task by Go package (the binary is
stripped; ``bench/gosym.py`` names its functions from Go's own table). Sampling costs the
server CPU of its own, more the longer a round lasts: compare profiled rounds with each
other, and take CPU figures from runs without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle  # noqa: E402

from bench.bare_load import spawn as spawn_bare  # noqa: E402
from kasal.client import EmbeddedTemporal, connect, free_port, start_execution  # noqa: E402
from kasal.testing.specs import crew  # noqa: E402
from kasal.testing.worker_process import WorkerProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
#: Worker log markers of trouble under load.
TROUBLE = ("deadlock", "Failing workflow task", "timed out", "attempt 2", "Heartbeat timeout")


async def gc_pauses(http: httpx.AsyncClient, port: int) -> tuple[float, float, float]:
    """The worker's full collections so far, their seconds, and seconds in all collections
    (its ``kasal_gc_pause_seconds`` on ``/metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    full = full_seconds = seconds = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "kasal_gc_pause_seconds":
            continue
        for sample in family.samples:
            old = sample.labels.get("generation") == "2"
            if sample.name.endswith("_sum"):
                seconds += sample.value
                full_seconds += sample.value if old else 0.0
            elif sample.name.endswith("_count") and old:
                full += sample.value
    return full, full_seconds, seconds


async def server_requests(http: httpx.AsyncClient, port: int) -> Counter[str]:
    """Requests the dev server has served so far, by kind: each frontend RPC (``rpc``), each
    write or read of its database (``db``) and of its visibility store (``vis``)."""
    from prometheus_client.parser import text_string_to_metric_families

    kinds = {
        "service_requests": "rpc",
        "persistence_requests": "db",
        "visibility_persistence_requests": "vis",
    }
    counts: Counter[str] = Counter()
    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for family in text_string_to_metric_families(text):
        kind = kinds.get(family.name)
        for sample in family.samples if kind else ():
            if kind == "rpc" and sample.labels.get("service_name") != "frontend":
                continue
            counts[f"{kind} {sample.labels.get('operation')}"] += int(sample.value)
    return counts


def per_task(before: Counter[str], after: Counter[str], tasks: int, limit: int = 10) -> str:
    """The server requests a round made per task, most frequent first."""
    made = after - before
    db = sum(n for k, n in made.items() if not k.startswith("rpc"))
    top = ", ".join(f"{k} {n / tasks:.2f}" for k, n in made.most_common(limit))
    return f"{db / tasks:.1f} database requests/task ({top})"


def spread_over(
    seconds: float, count: int, start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]]
) -> Callable[[], Awaitable[WorkflowHandle[Any, Any]]]:
    """``start``, its ``count`` calls made at once spread evenly over ``seconds``."""
    started = iter(range(count))

    async def later() -> WorkflowHandle[Any, Any]:
        await asyncio.sleep(seconds * next(started) / count)
        return await start()

    return later


async def idle_rate(pid: int, seconds: float = 10.0) -> float:
    """CPU seconds per second that ``pid`` uses over ``seconds`` with nothing to do."""
    await asyncio.sleep(2)  # the warm-up's last workflow tasks settle
    before, began = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - began)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Round:
    """One count of one kind."""

    kind: str
    crews: int
    wall: float
    latencies: list[float]
    worker_cpu: float
    server_cpu: float
    rss_before: float
    rss_peak: float
    requests: int | None = None
    #: The dev server's requests during the round, per task (for the Temporal rounds).
    server: str = ""
    #: With ``--server-profile``: the share of the server's samples in each Go package's own
    #: code, and with the package anywhere on the stack.
    server_self: dict[str, float] = field(default_factory=dict)
    server_inclusive: dict[str, float] = field(default_factory=dict)

    def net(self, per_task: int, idle: float) -> str:
        """The server's CPU per task less what it spends idle (``idle``: CPU seconds per
        second with both workers connected and nothing to run) over the round's wall time."""
        if not idle or not self.server_cpu:
            return ""
        net = (self.server_cpu - idle * self.wall) / per_task * 1000
        return f" ({net:.1f} net of idle)"

    def line(self, tasks: int, idle: float = 0.0) -> str:
        per_task = self.crews * tasks
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        requests = "" if self.requests is None else f"  LLM requests {self.requests}/{per_task}"
        net = self.net(per_task, idle)
        return (
            f"{self.kind:6} {self.crews:5} crews  wall {self.wall:6.1f} s  "
            f"{self.crews / self.wall:6.1f} crews/s  p50 {statistics.median(lat):6.1f} s  "
            f"p99 {p99:6.1f} s  worker CPU {self.worker_cpu / per_task * 1000:5.1f} ms/task  "
            f"server CPU {self.server_cpu / per_task * 1000:5.1f} ms/task{net}  "
            f"RSS {self.rss_before:4.0f} -> {self.rss_peak:4.0f} MB{requests}"
        ) + (f"\n       server: {self.server}" if self.server else "")


async def until_closed(client: Client, task_queue: str, since: datetime, count: int) -> None:
    """Until ``count`` workflows on ``task_queue`` started since ``since`` have closed: one
    visibility count every 0.2 s. Waiting on each crew's result instead holds a history long
    poll per crew, renewed every 20 s: at 1,000 crews that was 2.1 polls and 0.9 history
    reads per task on the server, counted against the slower kind's CPU."""
    query = (
        f'TaskQueue = "{task_queue}" AND ExecutionStatus != "Running" '
        f'AND StartTime >= "{since.isoformat()}"'
    )
    while (await client.count_workflows(query)).count < count:
        await asyncio.sleep(0.2)


async def measure(
    kind,
    count,
    tasks,
    start_one,
    client,
    task_queue,
    worker_pid,
    server_pid,
    served=None,
    server_profile: Path | None = None,
) -> Round:
    """Start ``count`` crews at once and wait for all; CPU, memory and (with ``served``, a
    coroutine function) the server's requests around it. Latencies are the server's own
    (start to close), read once the round is measured. With ``server_profile``, ``perf``
    samples the dev server through the round (``server_profile/{kind}-{count}.data``)."""
    served_before = await served() if served else None
    perf = None
    if server_profile is not None:
        server_profile.mkdir(parents=True, exist_ok=True)
        perf_data = server_profile / f"{kind}-{count}.data"
        perf = subprocess.Popen(
            ["perf", "record", "-F", "499", "-g", "-p", str(server_pid), "-o", str(perf_data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # attached before the first crew starts
    rss_before = rss_mb(worker_pid)
    peak = [rss_before]
    worker0, server0 = cpu_seconds(worker_pid), cpu_seconds(server_pid)

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_mb(worker_pid))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    since = datetime.now(UTC) - timedelta(seconds=1)
    began = time.monotonic()
    handles = await asyncio.gather(*(start_one() for _ in range(count)))
    await until_closed(client, task_queue, since, count)
    wall = time.monotonic() - began
    sampler.cancel()
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        await asyncio.to_thread(perf.wait, 120)
    worker_cpu, server_cpu = cpu_seconds(worker_pid) - worker0, cpu_seconds(server_pid) - server0
    rss_peak = max(peak[0], rss_mb(worker_pid))
    served_after = None
    if served_before is not None:
        await asyncio.sleep(2)  # the server reports its metrics once a second
        served_after = await served()
    described = []
    for batch in range(0, count, 100):
        described += await asyncio.gather(*(h.describe() for h in handles[batch : batch + 100]))
    failed = [d for d in described if d.status != WorkflowExecutionStatus.COMPLETED]
    if failed:
        raise RuntimeError(f"{len(failed)} {kind} crews did not complete: {failed[0].status!r}")
    measured = Round(
        kind,
        count,
        wall,
        [(d.close_time - d.start_time).total_seconds() for d in described],
        worker_cpu,
        server_cpu,
        rss_before,
        rss_peak,
    )
    if served_before is not None and served_after is not None:
        measured.server = per_task(served_before, served_after, count * tasks)
    if perf is not None:
        binary = Path(f"/proc/{server_pid}/exe").resolve()
        measured.server_self, measured.server_inclusive = await asyncio.to_thread(
            server_shares, perf_data, binary
        )
    return measured


def server_shares(data: Path, binary: Path) -> tuple[dict[str, float], dict[str, float]]:
    """A ``perf`` recording of the dev server, by Go package: the share of samples in each
    package's own code (self), and the share with the package anywhere on the stack
    (inclusive). Kernel frames count as one package, ``kernel``."""
    from bench.gosym import GoSymbols, package

    names = GoSymbols(binary)
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    samples = 0
    for block in script.split("\n\n"):
        frames = [int(line, 16) for line in block.split()]
        if not frames:
            continue
        samples += 1
        packages = [
            "kernel" if ip >= 1 << 63 else package(names.name(ip) or "other") for ip in frames
        ]
        own[packages[0]] += 1
        anywhere.update(set(packages))
    total = max(samples, 1)
    return (
        {k: n / total for k, n in own.items()},
        {k: n / total for k, n in anywhere.items()},
    )


def server_profile_table(rounds: list[Round], tasks: int, limit: int = 16) -> str:
    """Server CPU per task by Go package, for every round profiled, in ms/task: the
    packages' own code, then with them anywhere on the stack; largest in the last round
    first."""
    profiled = [r for r in rounds if r.server_self]
    lines = []
    for title, pick in (("own code", 0), ("anywhere on the stack", 1)):
        ms = {
            r.kind: {
                pkg: share * r.server_cpu / (r.crews * tasks) * 1000
                for pkg, share in (r.server_self, r.server_inclusive)[pick].items()
            }
            for r in profiled
        }
        last = ms[profiled[-1].kind]
        # Every stack ends in the runtime (goexit): on the stack, it says nothing.
        packages = sorted(set(last) - {"runtime"} if pick else last, key=lambda p: -last[p])
        packages = packages[:limit]
        lines.append(
            f"       server CPU by Go package ({title}), ms/task: "
            + "  ".join(r.kind for r in profiled)
        )
        lines += [
            "         "
            + "  ".join(f"{ms[r.kind].get(pkg, 0.0):6.2f}" for r in profiled)
            + f"  {pkg}"
            for pkg in packages
        ]
    return "\n".join(lines)


async def plain_crewai(base_url: str, count: int, tasks: int) -> Round | None:
    """The same crews on plain CrewAI in a process of their own (bench/crewai_load.py)."""
    import json

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bench.crewai_load", base_url, str(count), str(tasks)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"crewai {count:5} crews  failed: {last}", flush=True)
        return None
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Round("crewai", count, figures["wall"], figures["latencies"], figures["cpu"], 0.0, 0, 0)


def profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` into collapsed stacks at ``out`` until stopped (SIGINT)."""
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "-p",
            str(pid),
            "-o",
            str(out),
            "--format",
            "raw",
            "-r",
            "100",
            "--nonblocking",
            # Only the thread holding the GIL: where the worker's CPU goes, not the many
            # threads waiting on providers.
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(collapsed: Path, limit: int = 25) -> str:
    """The functions the samples spent most time in (inclusive), from collapsed stacks."""
    from collections import Counter

    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # a frame whose name holds a line break (py-spy keeps it)
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1]] += int(count)
    return "\n".join(f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(limit))


async def main(
    counts: list[int],
    latency: float,
    tasks: int,
    profile: Path | None,
    throttle: float | None,
    crewai: bool = True,
    server_profile: Path | None = None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server_metrics = free_port()
        server = await EmbeddedTemporal(
            Path(tmp), port=free_port(), ui_port=None, metrics_port=server_metrics
        ).start()
        llm_port = free_port()
        llm = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kasal.testing.slow_llm",
                "--port",
                str(llm_port),
                "--latency",
                str(latency),
            ],
            cwd=ROOT,
        )
        queue = f"load-{uuid.uuid4().hex[:6]}"
        bare = spawn_bare(server.address, queue + "-bare")
        metrics_port = free_port()
        worker = WorkerProcess(
            server.address,
            queue,
            Path(tmp) / "worker",
            KASAL_LLM_BASE_URLS='["http://127.0.0.1:"]',
            KASAL_WORKER_METRICS_PORT=str(metrics_port),
            **({"KASAL_HEARTBEAT_THROTTLE_SECONDS": str(throttle)} if throttle else {}),
        )
        try:
            await asyncio.to_thread(worker.start)
            assert worker.process is not None and server.process is not None
            server_pid = server.process.pid
            client: Client = await connect(server.address)
            base_url = f"http://127.0.0.1:{llm_port}/v1"
            spec = crew(
                [{"name": f"t{i}", "description": f"Step {i}"} for i in range(tasks)],
                agents=[
                    {
                        "name": "analyst",
                        "role": "Analyst",
                        "goal": "Analyse",
                        "llm": {"model": "compatible/slow", "base_url": base_url},
                    }
                ],
            )

            async def start_bare() -> WorkflowHandle[Any, Any]:
                return await client.start_workflow(
                    "BenchBareLoad",
                    args=[tasks, latency],
                    id=f"bare-{uuid.uuid4()}",
                    task_queue=queue + "-bare",
                )

            async def start_kasal() -> WorkflowHandle[Any, Any]:
                started = await start_execution(client, spec, task_queue=queue)
                return client.get_workflow_handle(started.workflow_id)

            async with httpx.AsyncClient() as http:

                async def served() -> Counter[str]:
                    return await server_requests(http, server_metrics)

                async def bare_round(
                    kind: str, count: int, start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]]
                ) -> Round:
                    return await measure(
                        kind,
                        count,
                        tasks,
                        start,
                        client,
                        queue + "-bare",
                        bare.pid,
                        server_pid,
                        served,
                        server_profile,
                    )

                async def requests() -> int:
                    stats = (await http.get(f"http://127.0.0.1:{llm_port}/stats")).json()
                    return int(stats["requests"])

                # Warm-up: first workflows after a start are not steady state.
                for handle in await asyncio.gather(
                    *(start_bare() for _ in range(5)), *(start_kasal() for _ in range(5))
                ):
                    await handle.result()
                idle = await idle_rate(server.process.pid)
                print(
                    f"{tasks} sequential tasks per crew, {latency:g} s per LLM call "
                    f"(ideal crew latency {tasks * latency:g} s); one dev server, one worker; "
                    f"the idle server uses {idle * 1000:.0f} ms of CPU per second"
                )
                for count in counts:
                    rounds = [await bare_round("bare", count, start_bare)]
                    plain = await plain_crewai(base_url, count, tasks) if crewai else None
                    if plain is not None:
                        rounds.append(plain)
                    before = await requests()
                    collected = await gc_pauses(http, metrics_port)
                    logged = len(worker.output)
                    spy = None
                    if profile is not None:
                        profile.mkdir(parents=True, exist_ok=True)
                        out = profile / f"kasal-worker-{count}.txt"
                        spy = profiler(worker.process.pid, out)
                    kasal = await measure(
                        "kasal",
                        count,
                        tasks,
                        start_kasal,
                        client,
                        queue,
                        worker.process.pid,
                        server.process.pid,
                        served,
                        server_profile,
                    )
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(60)
                        print(f"worker profile ({out}), inclusive:\n{top_frames(out)}")
                    kasal.requests = await requests() - before
                    now = await gc_pauses(http, metrics_port)
                    full, full_s, all_s = (b - a for a, b in zip(collected, now, strict=True))
                    # The bare crews again, their starts spread so that the round lasts as
                    # long as Kasal's did: the server's cost per task at the same pace.
                    spread = max(kasal.wall - tasks * latency, 0.0)
                    paced = await bare_round("paced", count, spread_over(spread, count, start_bare))
                    rounds += [paced, kasal]
                    for r in rounds:
                        print(r.line(tasks, idle), flush=True)
                    if server_profile is not None:
                        print(server_profile_table(rounds, tasks), flush=True)
                    # What a healthy worker never logs: an activation past the SDK's deadlock
                    # timeout, a failed workflow task, an attempt timed out or retried.
                    trouble = [
                        line for line in worker.output[logged:] if any(m in line for m in TROUBLE)
                    ]
                    server_ms = {r.kind: r.server_cpu / (count * tasks) for r in rounds}
                    print(
                        f"       server CPU per task: kasal / bare "
                        f"{server_ms['kasal'] / server_ms['bare']:.2f}x, kasal / bare paced to "
                        f"kasal's wall {server_ms['kasal'] / server_ms['paced']:.2f}x",
                        flush=True,
                    )
                    print(
                        f"       kasal / bare wall {kasal.wall / rounds[0].wall:.2f}x, "
                        f"kasal / ideal {kasal.wall / (tasks * latency):.1f}x, worker log "
                        f"lines of trouble: {len(trouble)}"
                        + (f" (first: {trouble[0].strip()[:160]})" if trouble else ""),
                        flush=True,
                    )
                    if trouble:
                        kept = Path(tempfile.gettempdir()) / f"kasal-load-worker-{count}.log"
                        kept.write_text("".join(worker.output[logged:]))
                        print(f"       the worker's log of this round: {kept}", flush=True)
                    ms = {r.kind: r.worker_cpu / (count * tasks) * 1000 for r in rounds}
                    ms.setdefault("crewai", float("nan"))
                    print(
                        f"       worker CPU per task: kasal {ms['kasal']:.1f} ms = plain CrewAI "
                        f"{ms['crewai']:.1f} + durability {ms['kasal'] - ms['crewai']:.1f} "
                        f"(bare activity {ms['bare']:.1f}); in Python's collector "
                        f"{all_s:.1f} s, of it {full_s:.1f} s in {full:.0f} full collections",
                        flush=True,
                    )
        finally:
            worker.kill()
            bare.kill()
            llm.kill()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crews", default="50,200,1000")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument(
        "--profile", type=Path, help="sample the Kasal worker with py-spy into this directory"
    )
    parser.add_argument(
        "--heartbeat-throttle",
        type=float,
        help="the Kasal worker's KASAL_HEARTBEAT_THROTTLE_SECONDS (default: its own, 1 s)",
    )
    parser.add_argument(
        "--server-profile",
        type=Path,
        help="sample the dev server with perf (Linux) in each Temporal round into this directory",
    )
    parser.add_argument(
        "--no-crewai", action="store_true", help="skip the plain-CrewAI round (it is slow)"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.crews.split(",")]
    asyncio.run(
        main(
            counts,
            args.latency,
            args.tasks,
            args.profile,
            args.heartbeat_throttle,
            not args.no_crewai,
            args.server_profile,
        )
    )
