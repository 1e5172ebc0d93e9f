"""What ``kasal dev`` wires: its API runs the example crew with no provider key, as
``kasal run`` does, and a ``kasal worker`` says when it is ready."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli.main import READY_LINE, enable_offline_fallback, offline_fallback_for
from kasal.settings import get_settings
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    asgi_client,
    login,
    running_app,
    wait_for_status,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "research_crew.yaml"
PROVIDER_KEYS = ("OPENAI_API_KEY", "DATABRICKS_TOKEN", "DATABRICKS_HOST", "KASAL_LLM_BASE_URL")


@pytest.fixture
def no_keys(monkeypatch):
    """No provider key; the fallback setting restored afterwards."""
    for name in PROVIDER_KEYS:
        monkeypatch.delenv(name, raising=False)
    before = os.environ.pop("KASAL_OFFLINE_FALLBACK", None)
    get_settings.cache_clear()
    yield
    os.environ.pop("KASAL_OFFLINE_FALLBACK", None)
    if before is not None:
        os.environ["KASAL_OFFLINE_FALLBACK"] = before
    get_settings.cache_clear()


def test_the_fallback_applies_to_the_embedded_default_unless_told_otherwise(settings):
    embedded = settings.model_copy(update={"temporal_address": ""})
    assert offline_fallback_for(embedded, {})
    assert not offline_fallback_for(settings, {})  # a configured deployment fails clearly
    off = embedded.model_copy(update={"offline_fallback": False})
    assert not offline_fallback_for(off, {"KASAL_OFFLINE_FALLBACK": "false"})
    on = settings.model_copy(update={"offline_fallback": True})
    assert offline_fallback_for(on, {"KASAL_OFFLINE_FALLBACK": "true"})


async def test_the_api_of_kasal_dev_runs_the_example_crew_without_a_key(
    settings, worker, no_keys, caplog
):
    assert enable_offline_fallback(settings.model_copy(update={"temporal_address": ""}))
    spec = yaml.safe_load(EXAMPLE.read_text())
    async with running_app(api_settings_for(settings)) as app, asgi_client(app) as client:
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        with caplog.at_level(logging.WARNING, logger="kasal.client"):
            response = await client.post(
                "/api/v1/executions",
                json={"spec": spec, "inputs": {"product": "tea"}},
                headers=admin,
            )
        assert response.status_code == 202, response.text
        execution_id = response.json()["execution_id"]
        body = await wait_for_status(client, admin, execution_id, {"completed", "failed"}, 120)
        assert body["status"] == "completed", body
    said = " ".join(r.getMessage() for r in caplog.records)
    # It says which agent and why, as `kasal run` does.
    assert execution_id in said
    assert "openai/gpt-4o-mini -> offline/gpt-4o-mini (OPENAI_API_KEY is not set)" in said


@pytest.mark.parametrize("given_by", ["option", "environment"])
def test_kasal_worker_says_when_it_is_ready(tmp_path, temporal_server, given_by):
    ready_file = tmp_path / "run" / "ready.json"
    option = ["--ready-file", str(ready_file)] if given_by == "option" else []
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KASAL_")},
        "KASAL_TEMPORAL_ADDRESS": temporal_server.address,
        "KASAL_TASK_QUEUE": f"ready-{time.time_ns()}",
        "KASAL_DATA_DIR": str(tmp_path / "data"),
    }
    if given_by == "environment":  # as docker-compose.yml's healthcheck uses it
        env["KASAL_WORKER_READY_FILE"] = str(ready_file)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", *option],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 90
        for line in process.stderr:
            lines.append(line)
            if READY_LINE in line or time.monotonic() > deadline:
                break
        assert any(READY_LINE in line for line in lines), "".join(lines)
        assert env["KASAL_TASK_QUEUE"] in lines[-1] and temporal_server.address in lines[-1]
        ready = json.loads(ready_file.read_text())
        assert ready["task_queue"] == env["KASAL_TASK_QUEUE"] and ready["pid"] == process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0
    assert not ready_file.exists()  # a stopped worker does not claim readiness


def test_kasal_dev_runs_the_example_crew_posted_to_its_api_without_a_key(tmp_path):
    """The whole `kasal dev` process, as a client writer meets it: no key, example crew."""
    import httpx

    from kasal.client import free_port

    api_port = free_port()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KASAL_") and k not in PROVIDER_KEYS
        },
        "KASAL_DATA_DIR": str(tmp_path / "data"),
        "KASAL_EMBEDDED_PORT": str(free_port()),
        "KASAL_EMBEDDED_UI_PORT": "0",
        "KASAL_ADMIN_EMAIL": ADMIN_EMAIL,
        "KASAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "dev", "--api-port", str(api_port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "kasal dev did not get ready"
                time.sleep(0.2)
            token = client.post(
                "/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            spec = yaml.safe_load(EXAMPLE.read_text())
            started = client.post(
                "/api/v1/executions",
                json={"spec": spec, "inputs": {"product": "tea"}},
                headers=headers,
            )
            assert started.status_code == 202, started.text
            execution_id = started.json()["execution_id"]
            while True:
                body = client.get(f"/api/v1/executions/{execution_id}", headers=headers).json()
                if body["status"] in ("completed", "failed", "cancelled"):
                    break
                assert time.monotonic() < deadline + 60, body
                time.sleep(0.2)
            assert body["status"] == "completed", body
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    said = process.stderr.read() if process.stderr else ""
    assert "offline model" in said and "OPENAI_API_KEY is not set" in said, said[-3000:]
