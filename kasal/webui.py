"""What the Temporal Web UI (and ``temporal workflow describe``) says about an execution.

Static summary and details are set when the workflow starts: the crew, its process, its
tasks and their agents. Current details are set by the workflow as it runs: the running
task, its attempt, LLM calls so far, whether it waits for a person. Pure text builders
(sandbox-safe: no I/O, no clock), so the client and the workflow share them.
"""

from __future__ import annotations

from collections.abc import Mapping

from kasal.execution import ExecutionState, ExecutionStatus, TaskState
from kasal.spec import CrewSpec

#: The Web UI shows a single line of summary; Temporal caps user metadata in size.
SUMMARY_CHARS = 200
DETAILS_CHARS = 8000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def static_summary(spec: CrewSpec, *, replay_of: str | None = None) -> str:
    """One line: ``crew research (sequential, 4 tasks)``, and what a replay re-runs."""
    tasks = len(spec.tasks)
    line = f"crew {spec.name} ({spec.process}, {tasks} task{'s' if tasks != 1 else ''})"
    if replay_of:
        line += f" · replay of {replay_of}"
    return _cut(_one_line(line), SUMMARY_CHARS)


def static_details(
    spec: CrewSpec, *, replay_of: str | None = None, from_task: str | None = None
) -> str:
    """Markdown: the crew, its process, and every task with its agent (and role)."""
    roles = {a.name: _one_line(a.role) for a in spec.agents}
    lines = [f"**Crew** {spec.name} · **process** {spec.process}"]
    if spec.process == "hierarchical":
        lines.append("A manager plans each task and delegates to the agents.")
    if replay_of:
        lines.append(
            f"**Replay** of execution `{replay_of}` from task `{from_task}`: earlier tasks "
            "keep that execution's outputs."
        )
    lines.append("")
    lines.append("**Tasks**")
    for number, task in enumerate(spec.tasks, 1):
        flags = [
            flag
            for flag, on in (
                ("async", task.async_execution),
                ("human review", task.human_input),
            )
            if on
        ]
        extra = f" ({', '.join(flags)})" if flags else ""
        role = roles.get(task.agent)
        who = f"{task.agent} ({role})" if role and role != task.agent else task.agent
        lines.append(f"{number}. `{task.name}` by {who}{extra}")
    return _cut("\n".join(lines), DETAILS_CHARS)


def current_details(status: ExecutionStatus, llm_calls: Mapping[str, int]) -> str:
    """Markdown: what the execution does right now."""
    done = sum(1 for t in status.tasks if t.state == TaskState.COMPLETED)
    reused = sum(1 for t in status.tasks if t.reused_from)
    lines = [f"**State** {status.state.value} · {done}/{len(status.tasks)} tasks done"]
    if reused:
        lines[0] += f" ({reused} reused from {status.replay_of})"
    if status.resets:
        lines.append(f"Reset {status.resets} time(s) from Temporal; this run goes on from there.")
    active = [
        t
        for t in status.tasks
        if t.state in (TaskState.RUNNING, TaskState.RETRYING, TaskState.WAITING_FOR_INPUT)
    ]
    for task in active:
        calls = llm_calls.get(task.name, 0)
        state = "retrying" if task.state == TaskState.RETRYING else "running"
        if task.state == TaskState.WAITING_FOR_INPUT:
            state = "waiting for human input"
        lines.append(
            f"**Task** `{task.name}` ({task.agent}): {state}, attempt {max(task.attempts, 1)}, "
            f"{calls} LLM call{'s' if calls != 1 else ''} so far"
        )
    waiting = status.state == ExecutionState.WAITING_FOR_INPUT
    lines.append(f"**Waiting for human input:** {'yes' if waiting else 'no'}")
    lines.append(
        f"**Tokens** {status.token_usage.total_tokens} in {status.token_usage.requests} request(s)"
    )
    if status.error:
        lines.append(f"**Error** {_one_line(status.error)}")
    return _cut("\n".join(lines), DETAILS_CHARS)
