"""What a provider call costs the calling process with many calls in flight on one client.

    .venv/bin/python bench/provider_pool.py [--concurrency 20,200,1000] [--rounds 3]

A worker's tasks share one OpenAI client per provider configuration. For each concurrency N,
N threads (started beforehand) each make one chat completion at once against a local
OpenAI-compatible server answering after ``--latency`` s (:mod:`kasal.testing.slow_llm`, its
own process), ``--rounds`` times, with:

- ``openai``: the OpenAI SDK's default client (one httpx pool, up to 1,000 connections, 100
  kept alive), as CrewAI builds it;
- ``kasal``: the client Kasal's workers share (:class:`kasal.http_pool.ShardedTransport`:
  pools of at most ``--per-shard`` connections, 16 by default);
- ``thread``: that client, each call in a thread of its own as a worker made it for any
  provider (:func:`activities.journal.call_abandonable`);
- ``awaited``: the async client Kasal's workers share, each call awaited on one event loop
  (its own thread) as a worker makes it for OpenAI-compatible providers
  (:func:`activities.journal.await_abandonable`, :class:`kasal.http_pool.AsyncShardedTransport`,
  pools of at most 4 connections unless ``--per-shard`` is given).

Printed: this process's CPU per request (user + system), wall time per round, the
connections the server saw opened in the measured rounds (a call that finds no kept-alive
connection opens one) and the calls that failed (a connection closed under a request by
another thread's pass over the pool: encode/httpcore#1110).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

from activities.journal import LLMObserver, await_abandonable, call_abandonable  # noqa: E402
from kasal.client import free_port  # noqa: E402
from kasal.http_pool import ASYNC_PER_SHARD, PER_SHARD, AsyncShardedTransport, ShardedTransport  # noqa: E402

KINDS = ("openai", "kasal", "thread", "awaited")


def client_for(kind: str, base_url: str, per_shard: int | None) -> openai.OpenAI:
    if kind == "kasal":
        http = openai.DefaultHttpxClient(transport=ShardedTransport(per_shard=per_shard))
        return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, http_client=http)
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)


def connections_opened(port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{port}/stats").json().get("connections", 0))


class Caller:
    """One way of making a chat completion from a task's thread."""

    def __init__(self, kind: str, base_url: str, per_shard: int | None) -> None:
        self.kind = kind
        self.observer = LLMObserver()
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "awaited":
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True).start()
            http = openai.DefaultAsyncHttpxClient(
                transport=AsyncShardedTransport(per_shard=per_shard)
            )
            self.aclient = openai.AsyncOpenAI(
                base_url=base_url, api_key="x", max_retries=0, http_client=http
            )
        else:
            self.client = client_for("openai" if kind == "openai" else "kasal", base_url, per_shard)

    def __call__(self) -> None:
        messages: Any = [{"role": "user", "content": "Current Task: hi"}]
        if self.loop is not None:
            create = self.aclient.chat.completions.create
            await_abandonable(
                self.observer, self.loop, lambda: create(model="slow", messages=messages)
            )
        elif self.kind == "thread":
            create_sync = self.client.chat.completions.create
            call_abandonable(self.observer, create_sync, model="slow", messages=messages)
        else:
            self.client.chat.completions.create(model="slow", messages=messages)

    def close(self) -> None:
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self.aclient.close(), self.loop).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
        else:
            self.client.close()


def measure(
    kind: str, port: int, concurrency: int, rounds: int, per_shard: int | None
) -> tuple[float, float, int, int]:
    """CPU ms per request, wall s per round, connections opened and calls failed, over
    ``rounds`` bursts after a warm one."""
    caller = Caller(kind, f"http://127.0.0.1:{port}/v1", per_shard)
    barrier = threading.Barrier(concurrency)

    def call(_: int) -> bool:
        barrier.wait()  # all at once, as a burst of crews calls
        try:
            caller()
        except openai.APIError:
            return False
        return True

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(call, range(concurrency)))  # warm: threads started, connections open
        opened = connections_opened(port)
        cpu, wall = time.process_time(), time.perf_counter()
        answered = sum(sum(pool.map(call, range(concurrency))) for _ in range(rounds))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        opened = connections_opened(port) - opened
    caller.close()
    failed = concurrency * rounds - answered
    return cpu / (concurrency * rounds) * 1000, wall / rounds, opened, failed


def main(concurrencies: list[int], rounds: int, latency: float, per_shard: int | None) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kasal.testing.slow_llm", "--port", str(port)]
        + ["--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        print(
            f"one shared client, N calls at once, {latency:g} s per call, {rounds} rounds "
            "after a warm one (medians are not needed: CPU is summed)"
        )
        print(
            f"{'client':<8}{'N':>6}{'CPU ms/request':>16}{'wall s/round':>14}"
            f"{'opened':>8}{'failed':>8}"
        )
        for n in concurrencies:
            for kind in KINDS:
                cpu, wall, opened, failed = measure(kind, port, n, rounds, per_shard)
                print(f"{kind:<8}{n:>6}{cpu:>16.2f}{wall:>14.2f}{opened:>8}{failed:>8}", flush=True)
    finally:
        server.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="20,200,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument(
        "--per-shard",
        type=int,
        help=f"connections per pool (default {PER_SHARD}; {ASYNC_PER_SHARD} for awaited calls)",
    )
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    main(concurrencies, args.rounds, args.latency, args.per_shard)
