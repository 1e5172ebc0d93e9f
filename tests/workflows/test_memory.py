"""Memory and knowledge on a real worker, on SQLite and on real PostgreSQL: a second run
recalls what the first stored (seen in the prompts the stub received), owners do not
share memories, a knowledge file's chunk reaches the prompt, a SIGKILL mid-task writes no
memory twice."""

from __future__ import annotations

import json
import sqlite3

import asyncpg
import pytest

from kasal.client import start_execution
from kasal.settings import Settings, get_settings
from tests.fixtures.db import postgres_available, postgres_database
from tests.fixtures.llm_stub import ModelBehaviour
from tests.fixtures.temporal import running_worker
from tests.fixtures.worker_process import crash_mid_call_and_resume
from tests.helpers import crew, stub_agent


@pytest.fixture(params=["sqlite", "postgresql"])
async def app_db(request, tmp_path):
    """The app database URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return
    if not await postgres_available():
        pytest.skip("PostgreSQL not reachable")
    async with postgres_database() as url:
        yield url


async def memory_rows(url: str) -> list[tuple[str, str, str]]:
    """(kind, write_key, owner) of every memory record in the app database at ``url``."""
    query = "select kind, write_key, owner from memory_records order by write_key"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1]) as conn:
            return [tuple(r) for r in conn.execute(query)]
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


def remembering_crew(base_url: str, model: str = "mem", **extra):
    return crew(
        [
            {"name": "research", "description": "Research the durable crew market"},
            {"name": "report", "description": "Write the report on the durable crew market"},
        ],
        agents=[stub_agent(model, base_url)],
        memory=True,
        **extra,
    )


async def test_memory_carries_over_runs_per_crew_and_owner(
    temporal_client, task_queue, llm_stub, tmp_path, app_db, temporal_server
):
    settings = Settings(
        data_dir=tmp_path / "kasal",
        temporal_address=temporal_server.address,
        task_queue=task_queue,
        database_url=app_db,
    )
    spec = remembering_crew(llm_stub.base_url)
    async with running_worker(temporal_client, task_queue, settings):
        first = await (
            await start_execution(
                temporal_client, spec, task_queue=task_queue, crew_id="c1", owner="alice"
            )
        ).result()
        seen_first = len(llm_stub.requests_for("mem"))
        await (
            await start_execution(
                temporal_client, spec, task_queue=task_queue, crew_id="c1", owner="alice"
            )
        ).result()
        seen_second = len(llm_stub.requests_for("mem"))
        await (
            await start_execution(
                temporal_client, spec, task_queue=task_queue, crew_id="c1", owner="bob"
            )
        ).result()

    requests = llm_stub.requests_for("mem")
    first_run = requests[:seen_first]
    second_run = requests[seen_first:seen_second]
    bobs_run = requests[seen_second:]
    stored = [t.raw for t in first.tasks]
    assert not any("Useful context from memory" in r.prompt for r in first_run[:1])
    # The second run's very first prompt recalls what the first run's tasks produced.
    assert "# Useful context from memory:" in second_run[0].prompt
    assert all(output in second_run[0].prompt for output in stored)
    # Another owner's run of the same crew starts with no memories: none of alice's.
    assert "Useful context from memory" not in bobs_run[0].prompt

    rows = await memory_rows(app_db)
    assert [(kind, owner) for kind, _, owner in rows].count(("memory", "alice")) == 4
    assert [(kind, owner) for kind, _, owner in rows].count(("memory", "bob")) == 2
    assert len({key for _, key, _ in rows}) == len(rows)


async def test_knowledge_file_chunk_reaches_the_prompt(
    temporal_client, task_queue, worker, llm_stub, tmp_path, monkeypatch
):
    files = tmp_path / "files"
    files.mkdir()
    (files / "handbook.md").write_text(
        "# Handbook\n\nOur refund window is 45 days for annual plans.\n\n"
        + "\n\n".join(
            f"Unrelated paragraph {i} about office plants and parking." for i in range(40)
        )
    )
    (files / "prices.csv").write_text("plan,price\nbasic,10\npro,99\n")
    (files / "faq.json").write_text(json.dumps({"support": "email only"}))
    monkeypatch.setattr(get_settings(), "files_dir", files)
    agent = stub_agent("know", llm_stub.base_url)
    agent["knowledge_sources"] = [{"file": "prices.csv"}]
    spec = crew(
        [{"name": "answer", "description": "How long is the refund window for annual plans?"}],
        agents=[agent],
        knowledge_sources=[{"file": "handbook.md"}, {"path": "faq.json"}, "Kasal is durable."],
    )

    for _ in range(2):  # the second run embeds nothing new (once per content hash)
        await (await start_execution(temporal_client, spec, task_queue=task_queue)).result()

    prompt = llm_stub.requests_for("know")[0].prompt
    assert "Additional Information:" in prompt
    assert "refund window is 45 days" in prompt
    assert "Unrelated paragraph 39" not in prompt, "only the closest chunks are retrieved"
    keys = [k for kind, k, _ in await memory_rows(f"sqlite+aiosqlite:///{tmp_path / 'kasal.db'}")]
    assert len(keys) == len(set(keys)) and len(keys) > 4


async def test_sigkill_mid_task_does_not_duplicate_memories(
    temporal_server, temporal_client, task_queue, llm_stub, tmp_path, app_db
):
    llm_stub.behaviours["memkill"] = ModelBehaviour(block_at=2)  # the second task's call
    spec = remembering_crew(
        llm_stub.base_url, "memkill", timeout={"start_to_close": 120, "heartbeat": 2}
    )
    spec.agents[0].tools = []
    env = {"KASAL_DATABASE_URL": app_db}
    result, _events = await crash_mid_call_and_resume(
        temporal_server.address, temporal_client, task_queue, spec, llm_stub, tmp_path, **env
    )

    assert [t.attempts for t in result.tasks] == [1, 2]
    rows = await memory_rows(app_db)
    assert sorted(key.rsplit("/", 1)[1] for _, key, _ in rows) == ["report", "research"]
    # The retried task recalled the first task's memory, once.
    last = llm_stub.requests_for("memkill")[-1].prompt
    assert last.count(result.tasks[0].raw) >= 1
