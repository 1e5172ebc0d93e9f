"""CrewAI projects as they are: ``@CrewBase`` crews run durably, built by their own code.

A *code crew* is a project laid out as ``crewai create crew`` makes it::

    my_crew/
      pyproject.toml
      src/my_crew/
        crew.py            # @CrewBase class with @agent, @task and @crew methods
        main.py            # run() with the default inputs
        config/agents.yaml
        config/tasks.yaml
        tools/custom_tool.py

Kasal imports the project's crew module and lets CrewAI's decorators build the crew: what
``MyCrew().crew()`` returns is what runs. The crew becomes a :class:`~kasal.spec.CrewSpec`
with ``project`` set (agents, tasks, context, models and fields as data, so the workflow
orchestrates it like any crew, every task an activity), and each task attempt on a worker
builds the crew again from the project's code and runs the task asked for: tool instances,
custom ``BaseTool`` classes, Pydantic output models, guardrails and callbacks all work
without registering anything. Workers serve projects with ``kasal worker --project DIR``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kasal.exceptions import InvalidSpecError, NotFoundError
from kasal.spec import DEFAULT_MODEL, CrewSpec, LLMSpec, slug


class _Captured(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised instead of running the crew when reading ``main.py``'s ``run()`` inputs."""

    def __init__(self, inputs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.inputs = inputs


@dataclass
class Project:
    """A CrewAI project on this machine: where it is and its ``@CrewBase`` class."""

    name: str
    root: Path
    package: str
    crew_class: type
    source_dir: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- building -------------------------------------------------------------------------

    def build(self) -> tuple[Any, list[str], dict[int, str]]:
        """A fresh CrewAI ``Crew`` from the project's code, its task names in order, and
        agent names by object id (the ``@agent`` method names)."""
        instance = self.crew_class()
        crew_method = _crew_method(instance)
        crew = crew_method()
        metadata = getattr(instance, "__crew_metadata__", {})
        agent_names: dict[int, str] = {}
        for method_name in metadata.get("original_agents", {}):
            with contextlib.suppress(Exception):
                agent_names[id(getattr(instance, method_name)())] = method_name
        task_names: dict[int, str] = {}
        for method_name in metadata.get("original_tasks", {}):
            with contextlib.suppress(Exception):
                task_names[id(getattr(instance, method_name)())] = method_name
        names = [
            task_names.get(id(t)) or t.name or f"task_{i + 1}" for i, t in enumerate(crew.tasks)
        ]
        for agent in crew.agents:
            agent_names.setdefault(id(agent), slug(agent.role))
        # The project's own hooks (CrewAI adds close_mcp_server to every crew).
        hooks = [*metadata.get("before_kickoff", {}), *metadata.get("after_kickoff", {})]
        crew._kasal_hooks = [h for h in hooks if h != "close_mcp_server"]  # noqa: SLF001
        return crew, names, agent_names

    def default_inputs(self) -> dict[str, Any]:
        """The inputs ``main.py``'s ``run()`` passes to ``kickoff`` (empty if none).

        ``run()`` is called with ``Crew.kickoff`` swapped for a catcher, so inputs computed
        at run time (``str(datetime.now().year)``) come out as the project computes them.
        """
        main = self.source_dir / "main.py"
        if not main.is_file() or "def run" not in main.read_text(encoding="utf-8"):
            return {}
        from crewai import Crew

        def catch(_self: Any, inputs: dict[str, Any] | None = None, **_: Any) -> Any:
            raise _Captured(dict(inputs or {}))

        with self._lock:
            module = importlib.import_module(f"{self.package}.main")
            original = Crew.kickoff
            Crew.kickoff = catch  # type: ignore[method-assign, assignment]
            try:
                module.run()
            except _Captured as captured:
                return captured.inputs
            except Exception:
                return {}
            finally:
                Crew.kickoff = original  # type: ignore[method-assign]
        return {}

    def to_spec(self, inputs: dict[str, Any] | None = None) -> CrewSpec:
        """The crew as spec data (``project`` set): what the workflow orchestrates."""
        crew, names, agent_names = self.build()
        return crew_to_spec(crew, names, agent_names, project=self.name, inputs=inputs)


def crew_to_spec(
    crew: Any,
    task_names: list[str],
    agent_names: dict[int, str],
    *,
    project: str,
    inputs: dict[str, Any] | None = None,
) -> CrewSpec:
    """A CrewAI ``Crew`` (built by a project's code) as a code crew's spec.

    What Kasal cannot run durably yet is refused here, with the reason, rather than
    dropped when the worker runs the task.
    """
    hooks = getattr(crew, "_kasal_hooks", [])
    if hooks:
        raise InvalidSpecError(
            f"project {project!r}: @before_kickoff / @after_kickoff hooks "
            f"({', '.join(hooks)}) are not run by Kasal yet: give the inputs they would "
            "compute with --input (or the API's inputs), and read the execution's result",
            field="hooks",
        )
    refused = {
        "memory": "crew memory is not supported by Kasal workers yet",
        "knowledge_sources": "knowledge sources are not supported by Kasal workers yet",
    }
    for attr, why in refused.items():
        if getattr(crew, attr, None):
            raise InvalidSpecError(f"project {project!r}: {why}", field=attr)
    agents = []
    for agent in crew.agents:
        agents.append(
            {
                "name": agent_names[id(agent)],
                "role": agent.role,
                "goal": agent.goal,
                "backstory": agent.backstory or "",
                "llm": llm_spec_of(agent.llm),
                "allow_delegation": bool(agent.allow_delegation),
                "max_iter": agent.max_iter,
                "verbose": bool(agent.verbose),
            }
        )
    tasks = []
    by_id = {id(t): n for t, n in zip(crew.tasks, task_names, strict=True)}
    for task, name in zip(crew.tasks, task_names, strict=True):
        agent = task.agent
        context = task.context if isinstance(task.context, list) else None
        tasks.append(
            {
                "name": name,
                "description": task.description,
                "expected_output": task.expected_output,
                "agent": agent_names[id(agent)] if agent is not None else agents[0]["name"],
                "context": None if context is None else [by_id[id(c)] for c in context],
                "async_execution": bool(task.async_execution),
                "human_input": bool(task.human_input),
                "output_json": _schema(task.output_json),
                "output_pydantic": _schema(task.output_pydantic),
                "output_file": task.output_file,
                "markdown": bool(task.markdown),
                "guardrail": task.guardrail if isinstance(task.guardrail, str) else None,
                "guardrail_max_retries": task.guardrail_max_retries,
            }
        )
    process = getattr(crew.process, "value", crew.process)
    data: dict[str, Any] = {
        "name": crew.name or project,
        "project": project,
        "process": process,
        "agents": agents,
        "tasks": tasks,
        "inputs": inputs or {},
        "planning": bool(crew.planning),
        "max_rpm": crew.max_rpm,
        "verbose": bool(crew.verbose),
    }
    if crew.planning and crew.planning_llm is not None:
        data["planning_llm"] = llm_spec_of(crew.planning_llm)
    if process == "hierarchical":
        if crew.manager_agent is not None:
            manager = crew.manager_agent
            data["manager_agent"] = {
                "name": "manager",
                "role": manager.role,
                "goal": manager.goal,
                "backstory": manager.backstory or "",
                "llm": llm_spec_of(manager.llm),
            }
        else:
            data["manager_llm"] = llm_spec_of(crew.manager_llm)
    return CrewSpec.from_data(data)


def llm_spec_of(llm: Any) -> dict[str, Any]:
    """A CrewAI ``LLM`` (or model string) as spec data; None is CrewAI's default model."""
    if llm is None:
        return {"model": DEFAULT_MODEL}
    if isinstance(llm, str):
        return {"model": LLMSpec(model=llm).model}
    model = str(getattr(llm, "model", "") or DEFAULT_MODEL.split("/", 1)[1])
    provider = str(getattr(llm, "provider", "") or "openai")
    if "/" not in model:
        model = f"{provider}/{model}"
    data: dict[str, Any] = {"model": model}
    temperature = getattr(llm, "temperature", None)
    if isinstance(temperature, int | float) and 0 <= temperature <= 2:
        data["temperature"] = float(temperature)
    return data


def _schema(model: Any) -> dict[str, Any] | None:
    if model is None:
        return None
    schema: dict[str, Any] = model.model_json_schema()
    return schema


def _crew_method(instance: Any) -> Any:
    """The ``@crew`` method (CrewAI marks it ``is_crew``; by convention it is ``crew``)."""
    cls = type(instance)
    marked = [n for n in dir(cls) if getattr(getattr(cls, n, None), "is_crew", False)]
    for name in [*marked, "crew"]:
        if callable(getattr(instance, name, None)):
            return getattr(instance, name)
    raise InvalidSpecError(f"{cls.__name__} has no @crew method", field="project")


# -- finding and loading projects ---------------------------------------------------------

_PROJECTS: dict[str, Project] = {}
_BY_ROOT: dict[Path, Project] = {}
_load_lock = threading.Lock()


def is_project_dir(path: str | Path) -> bool:
    """True if ``path`` looks like a CrewAI project (a ``crew.py`` with ``@CrewBase``)."""
    try:
        _find_crew_module(Path(path).resolve())
    except InvalidSpecError:
        return False
    return True


def _find_crew_module(root: Path) -> Path:
    if not root.is_dir():
        raise InvalidSpecError(f"{root} is not a directory", field="project")
    candidates = sorted(root.glob("src/*/crew.py")) + sorted(root.glob("*/crew.py"))
    candidates += [root / "crew.py"] if (root / "crew.py").is_file() else []
    for candidate in candidates:
        if "CrewBase" in candidate.read_text(encoding="utf-8", errors="replace"):
            return candidate
    raise InvalidSpecError(
        f"{root} is not a CrewAI project: no src/<package>/crew.py with a @CrewBase class "
        "(the layout `crewai create crew` makes)",
        field="project",
    )


def _project_name(root: Path, package: str) -> str:
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        with contextlib.suppress(Exception):
            name = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]
            if isinstance(name, str) and name:
                return name
    return package


def load_project(path: str | Path) -> Project:
    """Import the CrewAI project at ``path`` (once per process) and register it by name."""
    root = Path(path).resolve()
    with _load_lock:
        if root in _BY_ROOT:
            return _BY_ROOT[root]
        crew_file = _find_crew_module(root)
        package_dir = crew_file.parent
        package = package_dir.name
        import_root = package_dir.parent
        if str(import_root) not in sys.path:
            sys.path.insert(0, str(import_root))
        try:
            module = importlib.import_module(f"{package}.crew")
        except Exception as exc:
            raise InvalidSpecError(
                f"could not import {package}.crew from {import_root}: {type(exc).__name__}: "
                f"{exc} (install the project's dependencies beside Kasal, as `crewai run` "
                "needs them too)",
                field="project",
            ) from exc
        crew_class = _crew_class(module, crew_file)
        project = Project(
            name=_project_name(root, package),
            root=root,
            package=package,
            crew_class=crew_class,
            source_dir=package_dir,
        )
        _PROJECTS[project.name] = project
        _BY_ROOT[root] = project
        return project


def _crew_class(module: Any, crew_file: Path) -> type:
    # The class in crew.py itself that @CrewBase made (CrewAI marks it is_crew_class).
    tree = ast.parse(crew_file.read_text(encoding="utf-8"))
    names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    for name in names:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and getattr(cls, "is_crew_class", False):
            return cls
    raise InvalidSpecError(f"{crew_file} defines no @CrewBase class", field="project")


def registered_projects() -> dict[str, Project]:
    """Projects this process has loaded, by name."""
    return dict(_PROJECTS)


def get_project(name: str) -> Project:
    """The loaded project called ``name``; a clear error on a worker that does not serve it."""
    if name not in _PROJECTS:
        from kasal.settings import get_settings

        for path in get_settings().projects:
            with contextlib.suppress(InvalidSpecError):
                load_project(path)
    try:
        return _PROJECTS[name]
    except KeyError:
        served = ", ".join(sorted(_PROJECTS)) or "none"
        raise NotFoundError(
            f"CrewAI project {name!r} is not served by this worker (serves: {served}); "
            "start workers with `kasal worker --project DIR`",
            field="project",
        ) from None


# -- what a worker builds for one task of a code crew (activities.project_runtime) ------


def build_project_crew(spec: CrewSpec) -> Any:
    """The project's crew, built by its own code, with the execution's inputs filled in."""
    assert spec.project is not None
    project = get_project(spec.project)
    crew, names, agent_names = project.build()
    if spec.inputs:
        crew._interpolate_inputs(spec.inputs)
    crew._kasal_task_names = names  # noqa: SLF001 - read back by build_project_task
    crew._kasal_agent_names = agent_names  # noqa: SLF001
    return crew


def project_pydantic_models(spec: CrewSpec) -> dict[str, Any]:
    """Task name -> the project's own Pydantic output class (for results in this process)."""
    if not spec.project or spec.project not in _PROJECTS:
        return {}
    crew, names, _ = _PROJECTS[spec.project].build()
    return {
        name: task.output_pydantic
        for task, name in zip(crew.tasks, names, strict=True)
        if task.output_pydantic is not None
    }
