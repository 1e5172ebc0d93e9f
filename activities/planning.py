"""CrewAI's crew planning, run as Kasal's ``plan_crew`` activity.

CrewAI plans once at kickoff (``Crew._handle_crew_planning``): a planner agent reads every
task (description, expected output, agent, tools) and writes one plan per task, which is
appended to that task's description. Kasal runs the same ``CrewPlanner`` with an observed,
journaled LLM in an activity of its own, and the workflow hands each task its plan: a crash
after planning never plans again, and a crash during it repeats at most the call in flight.
"""

from __future__ import annotations

from typing import Any

from activities.crewai_runtime import observed_llm
from activities.journal import TaskObserver
from kasal.llm import CallContext, OfflineLLM
from kasal.spec import DEFAULT_PLANNING_MODEL, CrewSpec, LLMSpec
from kasal.tools import resolve_tools

#: The planning activity's id (and journal key).
PLANNER_KEY = "planning"


def planning_llm_spec(spec: CrewSpec) -> LLMSpec:
    """The planner's model: ``planning_llm``, else CrewAI's planner default."""
    return spec.planning_llm or LLMSpec(model=DEFAULT_PLANNING_MODEL)


def make_plan(spec: CrewSpec, observer: TaskObserver, context: CallContext) -> dict[str, str]:
    """Plan every task of ``spec``: task name -> the text CrewAI appends to its description."""
    from crewai import Agent, Task
    from crewai.utilities.planning_handler import CrewPlanner

    names = [t.name for t in spec.tasks]
    project_llm = None
    if spec.project:
        from kasal.project import build_project_crew

        crew = build_project_crew(spec)
        tasks: list[Any] = list(crew.tasks)
        project_llm = crew.planning_llm
        if isinstance(project_llm, str):
            from crewai.utilities.llm_utils import create_llm

            project_llm = create_llm(project_llm)
    else:
        # The planner reads the agents' roles, goals and tools; their models are not called.
        placeholder = OfflineLLM(model="offline/not-called")
        agents = {
            a.name: Agent(
                role=a.role,
                goal=a.goal,
                backstory=a.backstory or a.role,
                llm=placeholder,
                tools=resolve_tools(a.tools),
            )
            for a in spec.agents
        }
        tasks = [
            Task(
                description=t.description,
                expected_output=t.expected_output,
                agent=agents[t.agent],
                tools=resolve_tools(t.tools),
                name=t.name,
            )
            for t in spec.tasks
        ]
    llm = observed_llm(planning_llm_spec(spec), observer, context, inner=project_llm)
    result = CrewPlanner(tasks=tasks, planning_agent_llm=llm)._handle_crew_planning()
    plans: dict[str, str] = {}
    for step in result.list_of_plans_per_task:
        index = step.task_number - 1
        if 0 <= index < len(names):
            plans.setdefault(names[index], step.plan)  # the first plan wins, as in CrewAI
    return plans
