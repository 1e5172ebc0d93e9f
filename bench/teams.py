"""What issue 10 costs per request: authentication by access token vs API key, the audit
entry of a mutation, tracing on, and the shared Redis limiter vs in-process counts.

In-process API (httpx over ASGI, no sockets), SQLite app database, no Temporal needed (the
routes measured do not use it). Prints mean and p99 per request:

    .venv/bin/python bench/teams.py [--requests 300]
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")

from pydantic import SecretStr  # noqa: E402

from api.testing import (  # noqa: E402
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    TEST_SECRET,
    asgi_client,
    login,
    offline_spec,
    running_app,
)
from kasal.settings import Settings  # noqa: E402


def settings_for(data: Path, **overrides) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data,
        "database_url": f"sqlite+aiosqlite:///{data / 'bench.db'}",
        "temporal_address": "127.0.0.1:1",  # unreachable: these routes never ask it
        "admin_email": ADMIN_EMAIL,
        "admin_password": SecretStr(ADMIN_PASSWORD),
        "secret_key": SecretStr(TEST_SECRET),
        "login_rate_limit": "100000/minute",
        "execution_rate_limit": "100000/minute",
        "api_key_rate_limit": "100000/minute",
    }
    values.update(overrides)
    return Settings(**values)


async def timed(count: int, call) -> tuple[float, float]:
    durations = []
    for _ in range(count):
        began = time.perf_counter()
        await call()
        durations.append((time.perf_counter() - began) * 1000)
    durations.sort()
    return statistics.mean(durations), durations[int(len(durations) * 0.99) - 1]


async def measure(label: str, settings: Settings, count: int, tracing: bool = False) -> None:
    if tracing:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from kasal import telemetry

        os.environ["OTEL_SDK_DISABLED"] = "false"
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        telemetry.use_provider(provider)
    with contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115
        async with running_app(settings) as app, asgi_client(app) as client:
            token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            key = (
                await client.post(
                    "/api/v1/keys", json={"name": "bench", "scopes": ["admin"]}, headers=token
                )
            ).json()["key"]
            by_key = {"X-API-Key": key}
            made = await client.post("/api/v1/crews", json=offline_spec(), headers=token)
            path = f"/api/v1/crews/{made.json()['id']}"
            rows = [
                ("GET crew, access token", lambda: client.get(path, headers=token)),
                ("GET crew, API key", lambda: client.get(path, headers=by_key)),
                (
                    "PUT crew (audited), access token",
                    lambda: client.put(path, json=offline_spec(), headers=token),
                ),
            ]
            for name, call in rows:
                await timed(20, call)  # warm up
                mean, p99 = await timed(count, call)
                print(f"{label:<28} {name:<34} mean {mean:6.2f} ms   p99 {p99:6.2f} ms")
    if tracing:
        from kasal import telemetry

        telemetry.use_provider(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        await measure("in-process limits", settings_for(base / "a"), args.requests)
        await measure(
            "Redis limits",
            settings_for(
                base / "b",
                redis_url="redis://127.0.0.1:6379/0",
                redis_prefix=f"kasal-bench-{uuid.uuid4().hex[:8]}",
            ),
            args.requests,
        )
        await measure("tracing on (in memory)", settings_for(base / "c"), args.requests, True)


if __name__ == "__main__":
    asyncio.run(main())
