"""The workers' catalog: the pure check (``kasal.catalog``) and the table workers publish to."""

from __future__ import annotations

from datetime import timedelta

from kasal.catalog import (
    BUILTIN_TOOLS,
    PROVIDERS,
    SOURCE_BUILTIN,
    Catalog,
    Problem,
    check_spec,
    worker_identity,
)
from kasal.db.models import WorkerCatalog, utcnow
from kasal.db.repositories import WorkerCatalogRepository
from kasal.spec import CrewSpec


def spec_with(agent: dict | None = None, task: dict | None = None, **crew) -> CrewSpec:
    return CrewSpec.model_validate(
        {
            "name": "c",
            "agents": [{"name": "a", "role": "A", "goal": "g", **(agent or {})}],
            "tasks": [
                {"name": "t", "description": "d", "expected_output": "o", "agent": "a"}
                | (task or {})
            ],
            **crew,
        }
    )


def test_the_catalog_repeats_what_workers_resolve():
    """kasal.catalog cannot import kasal.llm / kasal.tools (CrewAI); keep the lists equal."""
    from kasal.llm import PROVIDERS as LLM_PROVIDERS
    from kasal.tools import registered_tools

    assert PROVIDERS == LLM_PROVIDERS
    assert set(BUILTIN_TOOLS) <= set(registered_tools())


def test_a_spec_within_the_catalog_has_no_problems():
    spec = spec_with(
        {"tools": ["calculator"], "llm": {"model": "openai/gpt-4o", "base_url": "http://ok/v1"}},
        {"tools": ["file_read"]},
    )
    assert check_spec(spec, Catalog.of(base_urls=["http://ok/"])) == []


def test_every_problem_is_named_by_its_field():
    spec = spec_with(
        {"tools": ["calculator", "web_search"], "llm": {"model": "acme/x"}},
        {"tools": ["ghost"]},
        process="hierarchical",
        manager_llm={"model": "openai/gpt-4o", "base_url": "http://evil.example/v1"},
    )
    problems = check_spec(spec, Catalog.of(base_urls=["http://ok/"]))
    assert [(p.field, p.code) for p in problems] == [
        ("agents.0.llm.model", "unknown_provider"),
        ("agents.0.tools.1", "unknown_tool"),
        ("manager_llm.base_url", "base_url_not_allowed"),
        ("tasks.0.tools.0", "unknown_tool"),
    ]
    assert "'web_search'" in problems[1].message and SOURCE_BUILTIN in problems[1].message
    assert "KASAL_LLM_BASE_URLS" in problems[2].message
    assert isinstance(problems[0], Problem) and problems[0].as_dict()["code"] == "unknown_provider"


def test_the_offline_provider_ignores_base_url_and_manager_agents_are_checked():
    offline = spec_with({"llm": {"model": "offline/a", "base_url": "http://anything"}})
    assert check_spec(offline, Catalog.of()) == []
    managed = spec_with(
        process="hierarchical",
        manager_agent={"name": "m", "role": "M", "goal": "g", "tools": ["nope"]},
    )
    assert [p.field for p in check_spec(managed, Catalog.of())] == ["manager_agent.tools.0"]


async def test_workers_publish_and_republish_their_catalog(sessions):
    async with sessions() as session, session.begin():
        repo = WorkerCatalogRepository(session)
        await repo.publish("1@host", "q", ["calculator"])
        await repo.publish("2@host", "q", ["calculator", "word_count"])
        await repo.publish("1@host", "other", ["file_read"])
    async with sessions() as session, session.begin():
        await WorkerCatalogRepository(session).publish("1@host", "q", ["file_read"])  # restart
    async with sessions() as session:
        rows = await WorkerCatalogRepository(session).for_queue("q")
        assert {(r.identity, tuple(r.tools)) for r in rows} == {
            ("1@host", ("file_read",)),
            ("2@host", ("calculator", "word_count")),
        }
        assert rows[0].identity == "1@host"  # newest first


async def test_publishing_drops_long_gone_workers(sessions):
    async with sessions() as session, session.begin():
        session.add(
            WorkerCatalog(
                identity="old@host",
                task_queue="q",
                tools=[],
                published_at=utcnow() - WorkerCatalogRepository.RETENTION - timedelta(days=1),
            )
        )
    async with sessions() as session, session.begin():
        await WorkerCatalogRepository(session).publish(worker_identity(), "q", ["calculator"])
    async with sessions() as session:
        rows = await WorkerCatalogRepository(session).for_queue("q")
        assert [r.identity for r in rows] == [worker_identity()]
