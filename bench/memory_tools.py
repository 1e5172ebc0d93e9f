"""Memory recall latency, and what journaling a tool call costs against the bare call.

    .venv/bin/python bench/memory_tools.py [--records 2000] [--calls 200] [--postgres]

In one run, on the app database (a SQLite file; with ``--postgres`` also a fresh database
on the local PostgreSQL, the plain-SQL path when pgvector is missing):

- ``recall``: one task's recall as the worker does it: embed the query (offline embedder)
  and search a crew scope holding ``--records`` memories, top 3; median and p95;
- ``tool``: ``calculator`` (pure CPU, the cheapest tool) and ``code_execution`` (a sandboxed
  process), called bare (``tool.run``) and through ``ObservedTool`` with the attempt's
  journal in the app database (every call written before it returns); median per call and
  the difference, which is the price of a tool effect that survives a crash. ``calculator``
  is declared idempotent and so skips the journal; the bench journals it anyway, as any
  non-idempotent tool would be.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.journal import ObservedTool, Publisher, TaskObserver  # noqa: E402
from kasal.db.engine import session_factory  # noqa: E402
from kasal.db.journal import AttemptKey, JournalStore  # noqa: E402
from kasal.embedders import offline_embed  # noqa: E402
from kasal.memory import MemoryScope, MemoryStore  # noqa: E402
from kasal.testing.db import migrated_engine, postgres_database  # noqa: E402
from kasal.tools import CalculatorTool, CodeExecutionTool  # noqa: E402

WORDS = [
    "market",
    "research",
    "durable",
    "crews",
    "temporal",
    "worker",
    "journal",
    "memory",
    "knowledge",
    "report",
    "pricing",
    "customers",
    "churn",
    "revenue",
    "forecast",
    "risk",
    "compliance",
    "latency",
    "retries",
    "agents",
]


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"median {statistics.median(values) * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


async def bench_recall(url: str, records: int, queries: int) -> None:
    engine = await migrated_engine(url)
    store = MemoryStore(session_factory(engine))
    scope = MemoryScope(f"bench-{uuid.uuid4().hex[:8]}", "bench")
    texts = [
        " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) + f" item {i}"
        for i in range(records)
    ]
    started = time.perf_counter()
    for i, (text, vector) in enumerate(zip(texts, offline_embed(texts), strict=True)):
        await store.add(
            scope,
            kind="memory",
            write_key=f"task/bench/{i}",
            content=text,
            embedder="offline/default",
            embedding=vector,
        )
    load = time.perf_counter() - started
    timings = []
    for i in range(queries):
        t0 = time.perf_counter()
        vector = offline_embed([f"{WORDS[i % len(WORDS)]} report item {i}"])[0]
        hits = await store.search(scope, vector, "offline/default", limit=3)
        timings.append(time.perf_counter() - t0)
        assert hits
    name = url.split("://", 1)[0]
    print(
        f"recall  {name:22s} {records} memories: {_ms(timings)}"
        f"   (writes: {load / records * 1000:.2f} ms each)"
    )
    await store.clear(scope)
    await engine.dispose()


async def bench_tools(url: str, calls: int) -> None:
    engine = await migrated_engine(url)
    journal = JournalStore(session_factory(engine))
    loop = asyncio.get_running_loop()

    async def send(_batch: object) -> None:
        return None

    publisher = Publisher(loop, send, workflow_id="bench", task="t", activity_id="a", attempt=1)

    def observer() -> TaskObserver:
        key = AttemptKey(f"bench-{uuid.uuid4().hex}", "run", "a", 1)
        loop.call_soon_threadsafe(lambda: None)
        return TaskObserver(publisher, "agent", journal, key, [])

    class JournaledCalculator(CalculatorTool):
        idempotent: bool = False

    def measure(tool_factory, make_args, n: int) -> tuple[list[float], list[float]]:
        bare_tool = tool_factory()
        observed = ObservedTool.wrap(tool_factory(), observer())
        bare, journaled = [], []
        for i in range(n):
            args = make_args(i)
            t0 = time.perf_counter()
            bare_tool.run(**args)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            observed.run(**args)
            journaled.append(time.perf_counter() - t0)
        return bare, journaled

    name = url.split("://", 1)[0]
    for label, factory, make_args, n in (
        ("calculator", JournaledCalculator, lambda i: {"expression": f"{i} * 7 + 1"}, calls),
        ("code_execution", CodeExecutionTool, lambda i: {"code": f"print({i} * 7)"}, 20),
    ):
        bare, journaled = await asyncio.to_thread(measure, factory, make_args, n)
        extra = statistics.median(journaled) - statistics.median(bare)
        print(f"tool    {name:22s} {label:15s} bare      {_ms(bare)}")
        print(
            f"tool    {name:22s} {label:15s} journaled {_ms(journaled)}"
            f"   (+{extra * 1000:.2f} ms per call)"
        )
    await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'app.db'}"
        await bench_recall(url, args.records, args.queries)
        await bench_tools(url, args.calls)
        if args.postgres:
            async with postgres_database() as pg:
                await bench_recall(pg, args.records, args.queries)
                await bench_tools(pg, args.calls)


if __name__ == "__main__":
    asyncio.run(main())
