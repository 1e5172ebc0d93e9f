"""Kasal: durable CrewAI crews on Temporal.

    from kasal import Agent, Task, Crew
    crew = Crew(agents=[...], tasks=[...])
    result = crew.kickoff(inputs={...})   # a Temporal workflow; every task an activity

The facade is loaded lazily, so data modules (``kasal.spec``) stay light to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kasal.crew import Agent, Crew, Execution, Task
    from kasal.spec import CrewSpec

__all__ = ["Agent", "Crew", "CrewSpec", "Execution", "Task", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Agent", "Task", "Crew", "Execution"):
        from kasal import crew

        return getattr(crew, name)
    if name == "CrewSpec":
        from kasal.spec import CrewSpec

        return CrewSpec
    raise AttributeError(f"module 'kasal' has no attribute {name!r}")
