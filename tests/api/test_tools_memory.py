"""GET /api/v1/tools (what each tool is, its argument schema, whether the workers have it
configured) and /api/v1/crews/{id}/memory (list, search, clear; owners only)."""

from __future__ import annotations

from pydantic import SecretStr

from tests.fixtures.api import offline_spec, wait_for_status
from tests.fixtures.temporal import running_worker

TOOLS = "/api/v1/tools"


async def test_tool_catalog_says_what_each_tool_takes_and_whether_it_is_configured(
    client, alice, temporal_client, settings
):
    before = {t["name"]: t for t in (await client.get(TOOLS, headers=alice)).json()["items"]}
    assert before["calculator"]["configured"] and not before["web_search"]["configured"]
    assert (await client.get(TOOLS)).status_code == 401

    configured = settings.model_copy(
        update={"web_search_provider": "serper", "web_search_api_key": SecretStr("k")}
    )
    async with running_worker(temporal_client, settings.task_queue, configured):
        items = (await client.get(TOOLS, headers=alice)).json()["items"]
    tools = {t["name"]: t for t in items}
    search = tools["web_search"]
    assert search["configured"] and search["source"] == "builtin"
    assert search["args_schema"]["required"] == ["query"]
    assert "Search the web" in search["description"]
    query = tools["database_query"]
    assert not query["configured"] and "KASAL_QUERY_DATABASES" in query["problem"]
    assert set(tools["code_execution"]["args_schema"]["properties"]) == {"code"}
    assert tools["file_write"]["configured"]


async def test_crew_memory_is_listed_searched_and_cleared_by_its_owner_only(
    client, alice, bob, worker
):
    spec = offline_spec("remembering", tasks=2)
    spec["memory"] = True
    crew = (await client.post("/api/v1/crews", json=spec, headers=alice)).json()
    memory = f"/api/v1/crews/{crew['id']}/memory"
    for _ in range(2):
        started = await client.post(
            "/api/v1/executions", json={"crew_id": crew["id"]}, headers=alice
        )
        assert started.status_code in (200, 201, 202), started.text
        await wait_for_status(client, alice, started.json()["execution_id"], {"completed"})

    listed = (await client.get(memory, headers=alice)).json()
    assert listed["total"] == 4  # two tasks, two runs: one memory each, none twice
    assert {i["meta"]["task"] for i in listed["items"]} == {"step0", "step1"}
    found = (await client.get(f"{memory}/search", params={"q": "Step 1"}, headers=alice)).json()
    assert found["items"][0]["meta"]["task"] == "step1"
    assert found["items"][0]["score"] >= found["items"][-1]["score"]

    assert (await client.get(memory, headers=bob)).status_code == 404
    assert (await client.delete(memory, headers=bob)).status_code == 404
    assert (await client.delete(memory, headers=alice)).json() == {"deleted": 4}
    assert (await client.get(memory, headers=alice)).json()["total"] == 0
