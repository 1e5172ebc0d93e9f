"""Small crew-spec builders for tests and benchmarks."""

from __future__ import annotations

from typing import Any

from kasal.spec import CrewSpec


def crew(
    tasks: list[dict[str, Any]], agents: list[dict[str, Any]] | None = None, **extra: Any
) -> CrewSpec:
    """A crew spec; agents default to one offline analyst called ``analyst``."""
    agents = agents or [
        {"name": "analyst", "role": "Analyst", "goal": "Analyse things", "llm": "offline/default"}
    ]
    default_agent = agents[0]["name"]
    return CrewSpec.from_data(
        {
            "name": extra.pop("name", "test-crew"),
            "agents": agents,
            "tasks": [
                {"expected_output": "an answer", "agent": default_agent, **task} for task in tasks
            ],
            **extra,
        }
    )


def stub_agent(name: str, base_url: str, model: str | None = None, **llm: Any) -> dict[str, Any]:
    """An agent whose LLM is the local OpenAI-compatible stub (the real provider path)."""
    return {
        "name": name,
        "role": name.title(),
        "goal": f"Do {name} work",
        "llm": {"model": f"compatible/{model or name}", "base_url": base_url, **llm},
        "tools": ["calculator"],
    }


def offline_agent(
    model: str = "offline/default", tools: list[str] | None = None, **options: Any
) -> dict[str, Any]:
    """The agent ``analyst`` on the offline model, tuned by ``options`` (latency_ms, script,
    fail_first, fail_with)."""
    agent: dict[str, Any] = {
        "name": "analyst",
        "role": "Analyst",
        "goal": "g",
        "llm": {"model": model, "options": options},
    }
    if tools:
        agent["tools"] = tools
    return agent


FAST_RETRY = {"maximum_attempts": 3, "initial_interval": 0.1, "backoff_coefficient": 1.0}
