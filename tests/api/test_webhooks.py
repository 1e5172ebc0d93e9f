"""Webhooks delivered by workers through retrying activities, signed the Standard Webhooks
way: a real receiver that fails the first two deliveries gets every event exactly once per
event id although a worker is SIGKILLed on the way."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api.main import create_app  # noqa: F401 - imported first: api/ must not pull CrewAI in
from kasal.webhooks import verify
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    asgi_client,
    login,
    new_user,
    offline_spec,
    running_app,
)
from tests.fixtures.temporal import running_worker
from tests.fixtures.worker_process import WorkerProcess

WEBHOOKS = "/api/v1/webhooks"
EXECUTIONS = "/api/v1/executions"


class Receiver:
    """A webhook receiver on a real port: answers 500 to the first ``fail_first`` requests,
    checks each signature, and de-duplicates by ``webhook-id`` as receivers should."""

    def __init__(self, fail_first: int = 2) -> None:
        self.fail_first = fail_first
        self.secret = ""
        self.requests: list[dict] = []  # every request: id, body, status answered, valid
        self.first = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    status = 500 if len(receiver.requests) < receiver.fail_first else 200
                    receiver.requests.append(
                        {
                            "id": self.headers["webhook-id"],
                            "body": body,
                            "status": status,
                            "valid": verify(receiver.secret, dict(self.headers), body),
                        }
                    )
                receiver.first.set()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def accepted(self) -> Counter:
        with self.lock:
            return Counter(r["id"] for r in self.requests if r["status"] == 200)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


async def test_each_event_once_per_id_through_failures_and_a_killed_worker(
    tmp_path, settings, temporal_server, temporal_client, task_queue, receiver
):
    # Workers and API share the app database, as they share PostgreSQL in production.
    database = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    api = api_settings_for(settings, database_url=database, webhook_allow_private=True)
    env = {"KASAL_WEBHOOK_ALLOW_PRIVATE": "true", "KASAL_DATABASE_URL": database}
    first = WorkerProcess(temporal_server.address, task_queue, tmp_path / "w1", **env)
    # The survivor runs in this process (a second process would take ~10 s to start here).
    survivor = settings.model_copy(update={"database_url": database, "webhook_allow_private": True})
    async with running_app(api) as app, asgi_client(app) as client:
        alice = await new_user(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        created = await client.post(
            WEBHOOKS,
            json={"url": receiver.url, "events": ["task_completed", "execution_completed"]},
            headers=alice,
        )
        assert created.status_code == 201, created.text
        subscription = created.json()
        receiver.secret = subscription["secret"]
        assert subscription["secret"].startswith("whsec_")
        shown = (await client.get(f"{WEBHOOKS}/{subscription['id']}", headers=alice)).json()
        assert "secret" not in shown  # shown once

        try:
            await asyncio.to_thread(first.start)
            spec = offline_spec(tasks=2, latency_ms=300)
            spec["timeout"] = {"heartbeat": 2}  # the killed worker's task is noticed soon
            response = await client.post(EXECUTIONS, json={"spec": spec}, headers=alice)
            execution_id = response.json()["execution_id"]
            # The first delivery (task step0 completed) reaches the receiver, which fails
            # it: the worker dies now, in the middle of the crew and of the delivery.
            assert await asyncio.to_thread(receiver.first.wait, 60)
            first.kill()
            async with running_worker(temporal_client, task_queue, survivor):
                result = await client.get(
                    f"{EXECUTIONS}/{execution_id}/result", params={"wait": 90}, headers=alice
                )
                assert result.json()["status"] == "completed", result.text
                deadline = asyncio.get_running_loop().time() + 60
                while len(receiver.accepted()) < 3:
                    assert asyncio.get_running_loop().time() < deadline, receiver.requests
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # a duplicate would come within the retry interval

                accepted = receiver.accepted()
                trace = (await client.get(f"/api/v1/traces/{execution_id}", headers=alice)).json()
                wanted = [
                    e
                    for e in trace["events"]
                    if e["event"] in ("task_completed", "execution_completed")
                ]
                assert len(wanted) == 3
                assert len(accepted) == 3, receiver.requests
                delivered = {
                    json.loads(r["body"])["data"]["offset"]: r["id"]
                    for r in receiver.requests
                    if r["status"] == 200
                }
                assert set(delivered) == {e["offset"] for e in wanted}  # what was subscribed
                assert all(i.startswith(f"evt_{execution_id}_") for i in accepted)
                assert all(n == 1 for n in accepted.values()), accepted  # exactly once per id
                assert all(r["valid"] for r in receiver.requests)  # every attempt signed
                failed = [r for r in receiver.requests if r["status"] == 500]
                assert len(failed) == 2
                for attempt in failed:  # a retry is the same event: same id, same body
                    again = next(
                        r
                        for r in receiver.requests
                        if r["id"] == attempt["id"] and r["status"] == 200
                    )
                    assert again["body"] == attempt["body"]
                bodies = {r["id"]: json.loads(r["body"]) for r in receiver.requests}
                completed = bodies[delivered[wanted[-1]["offset"]]]
                assert completed["type"] == "execution_completed"
                assert completed["data"]["execution_id"] == execution_id

                log = (
                    await client.get(f"{WEBHOOKS}/{subscription['id']}/deliveries", headers=alice)
                ).json()
                # Every attempt is in the log, even the one whose worker died mid-flight.
                assert len(log["items"]) == len(receiver.requests) == 5
                assert sum(d["succeeded"] for d in log["items"]) == 3
                assert all(d["status_code"] in (200, 500, None) for d in log["items"])

                # Redelivery: the same event (id and body) once more, for a receiver to drop.
                delivery = next(d for d in log["items"] if d["succeeded"])
                redo = await client.post(
                    f"{WEBHOOKS}/{subscription['id']}/deliveries/{delivery['id']}/redeliver",
                    headers=alice,
                )
                assert redo.status_code == 202, redo.text
                while receiver.accepted()[delivery["event_id"]] < 2:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.1)
                same = [r["body"] for r in receiver.requests if r["id"] == delivery["event_id"]]
                assert len(set(same)) == 1
        finally:
            first.kill()


async def test_private_targets_are_refused_unless_allowed(client, alice):
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/x"):
        response = await client.post(
            WEBHOOKS, json={"url": url, "events": ["execution_completed"]}, headers=alice
        )
        assert response.status_code == 422, (url, response.text)
        assert "KASAL_WEBHOOK_ALLOW_PRIVATE" in response.json()["error"]["message"]
    unknown = await client.post(
        WEBHOOKS, json={"url": "https://example.com/h", "events": ["nope"]}, headers=alice
    )
    assert unknown.status_code == 422
