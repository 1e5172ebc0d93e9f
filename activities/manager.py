"""The manager of a hierarchical crew: its prompt, and how its answers are read.

The manager never works itself: each decision is one LLM call (one activity), and each
delegation it makes runs as its own activity, so a crash redoes none of the finished ones.
"""

from __future__ import annotations

import re
from typing import Any

from activities.models import DelegationRecord, ManagerDecision
from kasal.spec import AgentSpec, CrewSpec, TaskSpec, slug

_FINAL = re.compile(r"Final Answer:\s*(.*)", re.DOTALL | re.IGNORECASE)
_COWORKER = re.compile(r"^\s*Coworker:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
_TASK = re.compile(
    r"^\s*Task:\s*(.+?)(?=^\s*Context:|\Z)", re.MULTILINE | re.DOTALL | re.IGNORECASE
)
_CONTEXT = re.compile(r"^\s*Context:\s*(.*)", re.MULTILINE | re.DOTALL | re.IGNORECASE)


def manager_spec(spec: CrewSpec) -> AgentSpec:
    """The crew's manager: ``manager_agent``, or a coordinator on ``manager_llm``."""
    if spec.manager_agent is not None:
        return spec.manager_agent
    return AgentSpec(
        name="manager",
        role="Crew Manager",
        goal="Get each task done well by delegating to the right coworkers and reviewing "
        "their work",
        backstory="An experienced manager who plans, delegates and checks quality.",
        llm=spec.manager_llm,  # type: ignore[arg-type]  # validated: one of the two is set
    )


def manager_messages(
    spec: CrewSpec,
    manager: AgentSpec,
    task: TaskSpec,
    context: dict[str, str],
    history: list[DelegationRecord],
    correction: str | None = None,
) -> list[dict[str, Any]]:
    """The prompt for one manager decision."""
    coworkers = "\n".join(f"- {a.name}: {a.role}. {a.goal}" for a in spec.agents)
    system = (
        f"You are {manager.role}. {manager.goal}\n{manager.backstory}\n\n"
        f"Your coworkers:\n{coworkers}\n\n"
        "You never do the work yourself. Delegate one piece of work at a time, read the "
        "result, and delegate again or answer. Reply in exactly one of these two formats:\n\n"
        "Action: delegate\nCoworker: <coworker name from the list>\n"
        "Task: <the work, self-contained>\nContext: <everything they need to know>\n\n"
        "or\n\nFinal Answer: <the complete answer to the task, as the expected output asks>"
    )
    parts = [f"Current Task: {task.description}", f"Expected output: {task.expected_output}"]
    if context:
        parts.append("Context from earlier tasks:\n" + "\n\n".join(context.values()))
    for number, done in enumerate(history, 1):
        parts.append(f"Delegation {number} to {done.coworker}: {done.task}\nResult: {done.result}")
    if correction:
        parts.append(f"Your previous reply could not be used: {correction}")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_manager_decision(text: str, coworkers: list[str]) -> ManagerDecision:
    """Read the manager's reply; ``invalid`` (with the reason) if it is neither format."""
    final = _FINAL.search(text)
    coworker = _COWORKER.search(text)
    if final and not coworker:
        return ManagerDecision(action="final", answer=final.group(1).strip(), raw=text)
    task = _TASK.search(text)
    if not coworker or not task:
        return ManagerDecision(
            action="invalid",
            raw=text,
            problem="reply with 'Action: delegate' + Coworker/Task/Context, or 'Final Answer:'",
        )
    wanted = coworker.group(1).strip().strip("'\"")
    by_name = {c: c for c in coworkers} | {slug(c): c for c in coworkers}
    name = by_name.get(wanted) or by_name.get(slug(wanted))
    context = _CONTEXT.search(text)
    return ManagerDecision(
        action="delegate",
        coworker=name or wanted,
        task=task.group(1).strip(),
        context=context.group(1).strip() if context else "",
        raw=text,
        problem=None if name else f"unknown coworker {wanted!r}",
    )
