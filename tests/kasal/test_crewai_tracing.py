"""A worker runs CrewAI task by task, never through ``Crew.kickoff``: CrewAI's first-time
trace collection, which keeps every event until a kickoff ends, must stay off in Kasal's
processes, or a worker keeps every task's events for its whole life."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    if sys.argv[1] == "kasal":
        from kasal.settings import Settings, disable_crewai_telemetry
        disable_crewai_telemetry(Settings())
    else:  # CrewAI's own switches only
        os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
        os.environ["OTEL_SDK_DISABLED"] = "true"
        os.environ["CREWAI_TRACING_ENABLED"] = "false"
    from crewai import Agent, Task
    from crewai.events.listeners.tracing.trace_listener import TraceCollectionListener
    from crewai.llms.base_llm import BaseLLM

    class Answer(BaseLLM):
        def call(self, messages, tools=None, callbacks=None, available_functions=None,
                 from_task=None, from_agent=None, response_model=None):
            return "Thought: I now know the final answer\\nFinal Answer: done"

        def supports_function_calling(self):
            return False

        def get_context_window_size(self):
            return 8000

    for i in range(10):  # as a worker's attempts run tasks: one at a time, no kickoff
        agent = Agent(role="Analyst", goal="Analyse", backstory="", llm=Answer(model="a"))
        Task(description=f"Step {i}", expected_output="text", agent=agent).execute_sync(
            agent=agent
        )
    with open(sys.argv[2], "w") as answer:
        json.dump({"kept": len(TraceCollectionListener().batch_manager.event_buffer)}, answer)
    """
)


def _kept_events(mode: str, home: Path) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREWAI_", "KASAL_", "OTEL_"))}
    # A fresh user: no CrewAI user data yet, as on a new worker machine or container.
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), PYTHONPATH=str(ROOT))
    answer = home / "answer.json"
    subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(answer)],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # The answer goes to a file: CrewAI's event handlers print their panels to stdout from
    # threads of their own, and one may land after, or inside, an answer line there.
    return int(json.loads(answer.read_text())["kept"])


def test_a_worker_keeps_no_trace_events_of_its_tasks(tmp_path):
    (tmp_path / "crewai").mkdir()
    (tmp_path / "kasal").mkdir()
    # What Kasal works around: CrewAI's tracing switched off its own way still keeps them.
    assert _kept_events("crewai", tmp_path / "crewai") >= 10
    assert _kept_events("kasal", tmp_path / "kasal") == 0
