"""Crews are checked against the workers' catalog up front (issue 11, item 12).

Unknown tools, unknown LLM providers and endpoints outside KASAL_LLM_BASE_URLS are a 422
naming the field at crew create/replace and at execution start, instead of a failure when
the task runs. Real database, real Temporal, real (in-process) workers.
"""

from __future__ import annotations

import asyncio

from kasal.catalog import worker_identity
from kasal.db.models import WorkerCatalog
from kasal.db.repositories import WorkerCatalogRepository
from tests.api.test_auth import assert_error
from tests.fixtures.api import offline_spec
from tests.fixtures.temporal import running_worker

CREWS = "/api/v1/crews"
EXECUTIONS = "/api/v1/executions"


def spec_with(*, tools=(), llm=None) -> dict:
    spec = offline_spec(tasks=1)
    agent = spec["agents"][0]
    agent["tools"] = list(tools)
    if llm is not None:
        agent["llm"] = llm
    return spec


def assert_unrunnable(response, field: str, *words: str) -> dict:
    error = assert_error(response, 422, "unrunnable_spec")
    assert [d["field"] for d in error["details"]] == [field], error
    for word in words:
        assert word in error["message"], error["message"]
    return error


async def test_a_fresh_install_checks_tools_against_the_built_in_registry(client, alice):
    ok = await client.post(CREWS, json=spec_with(tools=["calculator"]), headers=alice)
    assert ok.status_code == 201, ok.text
    refused = await client.post(CREWS, json=spec_with(tools=["web_search"]), headers=alice)
    error = assert_unrunnable(refused, "agents.0.tools.0", "'web_search'", "built-in", "calculator")
    assert error["details"][0]["code"] == "unknown_tool"
    started = await client.post(
        EXECUTIONS, json={"spec": spec_with(tools=["web_search"])}, headers=alice
    )
    assert_unrunnable(started, "agents.0.tools.0", "'web_search'")
    assert (await client.get(EXECUTIONS, headers=alice)).json()["total"] == 0
    replaced = await client.put(
        f"{CREWS}/{ok.json()['id']}", json=spec_with(tools=["ghost"]), headers=alice
    )
    assert_unrunnable(replaced, "agents.0.tools.0", "'ghost'")


async def test_unknown_providers_and_foreign_endpoints_are_refused(client, alice):
    acme = spec_with(llm={"model": "acme/large"})
    for response in (
        await client.post(CREWS, json=acme, headers=alice),
        await client.post(EXECUTIONS, json={"spec": acme}, headers=alice),
    ):
        error = assert_unrunnable(response, "agents.0.llm.model", "'acme'", "openai")
        assert error["details"][0]["code"] == "unknown_provider"
    foreign = spec_with(llm={"model": "openai/gpt-4o", "base_url": "http://evil.example/v1"})
    for response in (
        await client.post(CREWS, json=foreign, headers=alice),
        await client.post(EXECUTIONS, json={"spec": foreign}, headers=alice),
    ):
        error = assert_unrunnable(response, "agents.0.llm.base_url", "KASAL_LLM_BASE_URLS")
        assert error["details"][0]["code"] == "base_url_not_allowed"
    # The test settings allow http://127.0.0.1: (the LLM stub servers).
    local = spec_with(llm={"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9/v1"})
    assert (await client.post(CREWS, json=local, headers=alice)).status_code == 201
    assert (await client.get(EXECUTIONS, headers=alice)).json()["total"] == 0


async def test_a_running_worker_publishes_its_tools_and_they_are_accepted(
    app, client, alice, temporal_client, task_queue, settings
):
    import tests.fixtures.custom_tools  # noqa: F401 - registers word_count in this process

    async with running_worker(temporal_client, task_queue, settings):
        async with app.state.kasal.sessions() as session:
            rows = await WorkerCatalogRepository(session).for_queue(task_queue)
        mine = [r for r in rows if r.identity == worker_identity()]
        assert mine and {"calculator", "file_read", "word_count"} <= set(mine[0].tools)
        started = await client.post(
            EXECUTIONS, json={"spec": spec_with(tools=["word_count"])}, headers=alice
        )
        assert started.status_code == 202, started.text
        refused = await client.post(
            EXECUTIONS, json={"spec": spec_with(tools=["ghost"])}, headers=alice
        )
        assert_unrunnable(refused, "agents.0.tools.0", "'ghost'", "polling", "word_count")


async def test_only_polling_workers_count_once_one_polls(
    app, client, alice, temporal_client, task_queue, settings
):
    """A catalog published by a worker that is gone counts only while no publisher polls."""
    async with app.state.kasal.sessions() as session, session.begin():
        session.add(WorkerCatalog(identity="1@gone-host", task_queue=task_queue, tools=["ghost"]))
    ghostly = spec_with(tools=["ghost"])
    accepted = await client.post(CREWS, json=ghostly, headers=alice)
    assert accepted.status_code == 201, accepted.text
    async with running_worker(temporal_client, task_queue, settings):
        # Temporal lists a worker's pollers once their first poll arrives: wait for that.
        for _ in range(100):
            refused = await client.post(CREWS, json=ghostly, headers=alice)
            if refused.status_code == 422:
                break
            await asyncio.sleep(0.1)
        assert_unrunnable(refused, "agents.0.tools.0", "'ghost'", "polling")
