"""Benchmarks of operating crews: how soon clients learn what happened.

Runs a real Temporal dev server, the API in this process (ASGI) and a worker in this
process, with SQLite as the app database, and prints:

- ``?wait=``: delay from an execution's end (``ended_at``, the workflow's clock) to the
  answer of a ``GET /result?wait=60`` that was already waiting (p50/p99);
- reconciliation: delay from ``terminate`` (outside Kasal) until the row says
  ``terminated``, with the default 2 s interval (p50/max);
- webhooks: delay from an ``execution_completed`` event's timestamp to its receipt by a
  local receiver (p50/p99), i.e. the child workflow, the activity and the signed POST;
- graceful stop: from the stop request to ``stopped`` while a 1 s task runs (p50).

    .venv/bin/python bench/operations.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

from api.testing import (  # noqa: E402
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    asgi_client,
    login,
    offline_spec,
    running_app,
)
from kasal.settings import Settings  # noqa: E402
from kasal.testing.temporal import client_for, start_server  # noqa: E402
from workflows.worker import running_worker  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def show(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{name:<44} p50 {statistics.median(ms):7.1f} ms   p99 {pct(ms, 99):7.1f} ms   "
        f"max {max(ms):7.1f} ms   (n={len(ms)})"
    )


async def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kasal-bench-ops-"))
    server = await start_server(tmp / "temporal")
    received: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            received[json.loads(body)["data"]["execution_id"]] = time.time()
            self.send_response(204)
            self.end_headers()

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        client = await client_for(server)
        settings = Settings(
            data_dir=tmp / "kasal",
            temporal_address=server.address,
            task_queue="bench-ops",
            database_url=f"sqlite+aiosqlite:///{tmp / 'app.db'}",
            webhook_allow_private=True,
        )
        api = api_settings_for(settings)
        async with (
            running_worker(client, "bench-ops", settings),
            running_app(api) as app,
            asgi_client(app) as http,
        ):
            headers = await login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
            url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
            made = await http.post(
                "/api/v1/webhooks",
                json={"url": url, "events": ["execution_completed"]},
                headers=headers,
            )
            assert made.status_code == 201, made.text

            async def start(spec: dict) -> str:
                response = await http.post(
                    "/api/v1/executions", json={"spec": spec}, headers=headers
                )
                return str(response.json()["execution_id"])

            # ?wait= and webhooks
            waits, hooks = [], []
            for _ in range(runs):
                execution_id = await start(offline_spec(tasks=1, latency_ms=200))
                answer = await http.get(
                    f"/api/v1/executions/{execution_id}/result",
                    params={"wait": 60},
                    headers=headers,
                )
                answered = time.time()
                assert answer.status_code == 200
                row = (await http.get(f"/api/v1/executions/{execution_id}", headers=headers)).json()
                ended = datetime.fromisoformat(row["ended_at"]).timestamp()
                waits.append(answered - ended)
                for _ in range(200):
                    if execution_id in received:
                        break
                    await asyncio.sleep(0.02)
                trace = (await http.get(f"/api/v1/traces/{execution_id}", headers=headers)).json()
                published = datetime.fromisoformat(trace["events"][-1]["timestamp"]).timestamp()
                hooks.append(received[execution_id] - published)
            show("?wait= answer after the end", waits)
            show("webhook received after the event", hooks)

            # reconciliation of a terminate from outside
            reconciled = []
            for _ in range(max(3, runs // 4)):
                execution_id = await start(offline_spec(tasks=1, latency_ms=5000))
                handle = client.get_workflow_handle(f"kasal-exec-{execution_id}")
                await asyncio.sleep(0.3)
                began = time.time()
                await handle.terminate(reason="bench")
                while True:
                    row = (
                        await http.get(f"/api/v1/executions/{execution_id}", headers=headers)
                    ).json()
                    if row["status"] == "terminated":
                        break
                    await asyncio.sleep(0.05)
                reconciled.append(time.time() - began)
            show("terminate -> row terminated (2 s interval)", reconciled)

            # graceful stop
            stops = []
            for _ in range(max(3, runs // 4)):
                execution_id = await start(offline_spec(tasks=3, latency_ms=1000))
                await asyncio.sleep(0.3)
                began = time.time()
                await http.post(f"/api/v1/executions/{execution_id}/stop", headers=headers)
                done = await http.get(
                    f"/api/v1/executions/{execution_id}/result",
                    params={"wait": 60},
                    headers=headers,
                )
                assert done.json()["status"] == "stopped"
                stops.append(time.time() - began)
            show("stop -> stopped (the running 1 s task ends)", stops)
    finally:
        receiver.shutdown()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
