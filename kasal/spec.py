"""The one crew model: plain, validated data shared by the API, the CLI, workflows and workers.

This module must stay importable inside the Temporal workflow sandbox: it imports no CrewAI,
opens nothing and reads no clock. Specs name LLMs and tools; workers resolve those names
through registries, so a spec never carries code or secrets.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kasal.exceptions import InvalidSpecError

#: Default model when an agent names none: the offline provider, which needs no network.
DEFAULT_MODEL = "offline/default"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RetrySpec(_Strict):
    """How Temporal retries a task's activity. Errors classified as non-retryable never are."""

    maximum_attempts: int = Field(default=3, ge=1, le=100)
    initial_interval: Seconds = 1.0
    backoff_coefficient: float = Field(default=2.0, ge=1.0, le=10.0)
    maximum_interval: Seconds = 60.0


class TimeoutSpec(_Strict):
    """Per-attempt bounds of a task's activity.

    ``heartbeat`` is how fast a dead worker is noticed: the activity heartbeats every few
    seconds while it runs, so a task on a killed worker is retried after at most this long.
    """

    start_to_close: Seconds = 600.0
    heartbeat: Seconds = 10.0
    schedule_to_close: Seconds | None = None

    def as_timedeltas(self) -> dict[str, timedelta | None]:
        """The values as the keyword arguments ``workflow.execute_activity`` takes."""
        return {
            "start_to_close_timeout": timedelta(seconds=self.start_to_close),
            "heartbeat_timeout": timedelta(seconds=self.heartbeat),
            "schedule_to_close_timeout": (
                timedelta(seconds=self.schedule_to_close) if self.schedule_to_close else None
            ),
        }


class LLMSpec(_Strict):
    """An LLM named by a model string, e.g. ``openai/gpt-4o`` or ``offline/analyst``.

    ``base_url`` points any OpenAI-compatible endpoint; ``api_key_env`` names the environment
    variable that holds its key (the key itself never lives in a spec). ``options`` tunes the
    offline provider (``script``, ``latency_ms``, ``fail_first``, ``fail_with``).
    """

    model: str = DEFAULT_MODEL
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    #: Only honoured if the worker allows it (KASAL_LLM_BASE_URLS): a spec comes from users,
    #: and a worker must never send its keys to a host a user picked.
    base_url: str | None = Field(default=None, max_length=500)
    #: A key variable a spec may name: KASAL_LLM_KEY_* or a provider's own. Never any other
    #: variable of the worker's environment (it could be a database URL).
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^(KASAL_LLM_KEY_[A-Z0-9_]+|OPENAI_API_KEY|DATABRICKS_TOKEN|OLLAMA_API_KEY"
        r"|KASAL_LLM_API_KEY)$",
    )
    timeout: Seconds = 120.0
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _model_has_provider(cls, value: str) -> str:
        provider, sep, name = value.partition("/")
        if not sep or not provider or not name:
            raise ValueError(
                f"model {value!r} must be '<provider>/<model>', e.g. 'openai/gpt-4o' "
                "or 'offline/default'"
            )
        return value

    @property
    def provider(self) -> str:
        """The part of the model string before the first slash."""
        return self.model.split("/", 1)[0]


class KnowledgeSourceSpec(_Strict):
    """A knowledge source (CrewAI's ``knowledge_sources``): a string, or a file under the
    workers' files directory (text, Markdown, PDF, CSV or JSON, by extension)."""

    content: str | None = Field(default=None, max_length=1_000_000)
    path: str | None = Field(default=None, max_length=500)
    #: Free-form labels stored with the chunks (CrewAI's ``metadata``).
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _accept_shorthand(cls, data: Any) -> Any:
        # ``"some text"`` is a string source; ``{"file": "x.md"}`` / ``{"file_paths": [..]}``
        # are spelled as in CrewAI's sources.
        if isinstance(data, str):
            return {"content": data}
        if isinstance(data, dict):
            data = dict(data)
            data.pop("type", None)
            if "file" in data:
                data["path"] = data.pop("file")
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> KnowledgeSourceSpec:
        if (self.content is None) == (self.path is None):
            raise ValueError("a knowledge source has either content or path")
        if self.path is not None and (self.path.startswith("/") or ".." in Path(self.path).parts):
            raise ValueError("a knowledge file path is relative to the files directory")
        return self


def _split_tool_args(data: Any) -> Any:
    """``tools: [{name: X, args: {...}}]`` becomes ``tools: [X]`` and ``tool_args: {X: {...}}``,
    so ``tools`` stays a list of names everywhere else."""
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        return data
    data = dict(data)
    names: list[Any] = []
    args = dict(data.get("tool_args") or {})
    for entry in data["tools"]:
        if isinstance(entry, dict) and "name" in entry:
            names.append(entry["name"])
            if entry.get("args"):
                args[entry["name"]] = entry["args"]
        else:
            names.append(entry)
    data["tools"] = names
    if args:
        data["tool_args"] = args
    return data


class AgentSpec(_Strict):
    """An agent: who does the work, with which LLM and tools (by name)."""

    name: str
    role: str = Field(min_length=1)
    goal: str = Field(min_length=1)
    backstory: str = ""
    llm: LLMSpec = Field(default_factory=LLMSpec)
    tools: list[str] = Field(default_factory=list)
    #: Arguments of tools built from ``crewai_tools`` classes, by tool name.
    tool_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    max_iter: int = Field(default=15, ge=1, le=200)
    allow_delegation: bool = False
    knowledge_sources: list[KnowledgeSourceSpec] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _accept_tool_args(cls, data: Any) -> Any:
        return _split_tool_args(data)

    @model_validator(mode="before")
    @classmethod
    def _accept_model_shorthand(cls, data: Any) -> Any:
        # ``model: openai/gpt-4o`` is shorthand for ``llm: {model: openai/gpt-4o}``, as in
        # CrewAI, where an agent's ``llm`` is usually just a model string.
        if isinstance(data, dict):
            data = dict(data)
            model = data.pop("model", None)
            llm = data.get("llm")
            if isinstance(llm, str):
                data["llm"] = {"model": llm}
            if model is not None:
                data.setdefault("llm", {})
                if isinstance(data["llm"], dict):
                    data["llm"] = {**data["llm"], "model": model}
            if "name" not in data and isinstance(data.get("role"), str):
                data["name"] = slug(data["role"])
        return data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value)


class TaskSpec(_Strict):
    """A task: what to do, which agent does it, what it sees, how it is retried and bounded.

    ``context`` names the tasks whose outputs this task sees; when it is not given, CrewAI's
    rules apply (see :meth:`CrewSpec.context_for`).
    """

    name: str
    description: str = Field(min_length=1)
    expected_output: str = Field(min_length=1)
    agent: str
    context: list[str] | None = None
    async_execution: bool = False
    human_input: bool = False
    #: How long a ``human_input`` task waits for feedback; None waits for ever.
    human_input_timeout: Seconds | None = None
    #: What happens when that wait times out: take the output as approved, or fail.
    human_input_timeout_outcome: Literal["approve", "fail"] = "approve"
    tools: list[str] = Field(default_factory=list)
    tool_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retry: RetrySpec | None = None
    timeout: TimeoutSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_tool_args(cls, data: Any) -> Any:
        return _split_tool_args(data)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value)


class CrewSpec(_Strict):
    """A whole crew as data: agents, tasks, process, defaults for retries and timeouts."""

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    process: Literal["sequential", "hierarchical"] = "sequential"
    agents: list[AgentSpec] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout: TimeoutSpec = Field(default_factory=TimeoutSpec)
    manager_llm: LLMSpec | None = None
    #: A hierarchical crew's manager as a full agent (instead of ``manager_llm``).
    manager_agent: AgentSpec | None = None
    #: Bound on a hierarchical task's manager decisions: a manager that never answers fails.
    manager_max_steps: int = Field(default=10, ge=1, le=100)
    #: CrewAI's ``memory=True``: tasks recall what earlier tasks and runs of this crew (for
    #: this owner) produced, and what they produce is remembered (see README "Memory").
    memory: bool = False
    #: The embedding model of memory and knowledge, named like an LLM (``openai/...``,
    #: ``ollama/...``, ``compatible/...``, ``offline/...``); None: the worker's default.
    embedder: LLMSpec | None = None
    knowledge_sources: list[KnowledgeSourceSpec] = Field(default_factory=list)

    @field_validator("embedder", mode="before")
    @classmethod
    def _accept_embedder_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"model": value}
        # CrewAI's form: {"provider": "openai", "config": {"model": "text-embedding-3-small"}}
        if isinstance(value, dict) and "provider" in value:
            config = dict(value.get("config") or {})
            model = config.pop("model", None) or config.pop("model_name", None) or "default"
            return {"model": f"{value['provider']}/{model}", **config}
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> CrewSpec:
        agent_names = [a.name for a in self.agents]
        _no_duplicates("agent", agent_names)
        task_names = [t.name for t in self.tasks]
        _no_duplicates("task", task_names)
        seen: set[str] = set()
        for index, task in enumerate(self.tasks):
            if task.agent not in agent_names:
                raise ValueError(
                    f"tasks[{index}] ({task.name!r}) names agent {task.agent!r}, which is not "
                    f"one of the crew's agents: {', '.join(agent_names)}"
                )
            for ref in task.context or []:
                if ref not in seen:
                    known = ref in task_names
                    raise ValueError(
                        f"tasks[{index}] ({task.name!r}) has context {ref!r}, which "
                        + ("comes later in the crew" if known else "is not a task of the crew")
                        + "; context may only name earlier tasks"
                    )
            seen.add(task.name)
        if self.process == "hierarchical" and not (self.manager_llm or self.manager_agent):
            raise ValueError("a hierarchical crew needs manager_llm or manager_agent")
        return self

    # -- behaviour derived from the data -------------------------------------------------

    def agent(self, name: str) -> AgentSpec:
        """The agent called ``name``."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    def retry_for(self, task: TaskSpec) -> RetrySpec:
        """The task's retry policy, or the crew's default."""
        return task.retry or self.retry

    def timeout_for(self, task: TaskSpec) -> TimeoutSpec:
        """The task's timeouts, or the crew's default."""
        return task.timeout or self.timeout

    def context_for(self, index: int) -> list[str]:
        """Names of the tasks whose outputs task ``index`` sees, as CrewAI decides it.

        An explicit ``context`` wins. Otherwise a synchronous task sees every task before it
        (CrewAI aggregates all earlier outputs), and an ``async_execution`` task sees the
        last synchronous task before it, so a batch of async tasks runs in parallel.
        """
        task = self.tasks[index]
        if task.context is not None:
            return list(task.context)
        earlier = self.tasks[:index]
        if task.async_execution:
            return [t.name for t in earlier if not t.async_execution][-1:]
        return [t.name for t in earlier]

    def placeholders(self) -> set[str]:
        """Every ``{name}`` placeholder used by task descriptions and expected outputs."""
        found: set[str] = set()
        texts = [a.role for a in self.agents] + [a.goal for a in self.agents]
        texts += [a.backstory for a in self.agents]
        for task in self.tasks:
            texts += [task.description, task.expected_output]
        for text in texts:
            found.update(_PLACEHOLDER_RE.findall(text))
        return found

    def interpolated(self, inputs: dict[str, Any] | None = None) -> CrewSpec:
        """A copy with ``{placeholders}`` filled from the spec's inputs overlaid with ``inputs``.

        Raises :class:`InvalidSpecError` naming any placeholder that has no value. Braces
        that are not placeholders (JSON examples in a description) are left alone.
        """
        values = {**self.inputs, **(inputs or {})}
        missing = sorted(self.placeholders() - set(values))
        if missing:
            raise InvalidSpecError(
                f"missing input(s) for placeholder(s): {', '.join(missing)}",
                field="inputs",
            )

        def fill(text: str) -> str:
            return _PLACEHOLDER_RE.sub(
                lambda m: _as_text(values[m.group(1)]) if m.group(1) in values else m.group(0),
                text,
            )

        data = self.model_dump()
        for agent in data["agents"]:
            for key in ("role", "goal", "backstory"):
                agent[key] = fill(agent[key])
        for task in data["tasks"]:
            task["description"] = fill(task["description"])
            task["expected_output"] = fill(task["expected_output"])
        data["inputs"] = values
        return CrewSpec.model_validate(data)

    # -- (de)serialisation ----------------------------------------------------------------

    def to_yaml(self) -> str:
        """The spec as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> CrewSpec:
        """Parse YAML (or JSON, which is YAML) into a validated spec."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidSpecError(f"not valid YAML/JSON: {exc}") from exc
        return cls.from_data(data)

    @classmethod
    def from_data(cls, data: Any) -> CrewSpec:
        """Validate plain data, turning Pydantic errors into one :class:`InvalidSpecError`."""
        if not isinstance(data, dict):
            raise InvalidSpecError("a crew spec must be a mapping with agents and tasks")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidSpecError.from_validation(exc) from exc

    @classmethod
    def from_file(cls, path: str | Path) -> CrewSpec:
        """Load a spec from a ``.yaml``, ``.yml`` or ``.json`` file."""
        file = Path(path)
        if not file.is_file():
            raise InvalidSpecError(f"no such file: {file}", field="path")
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".json":
            try:
                return cls.from_data(json.loads(text))
            except json.JSONDecodeError as exc:
                raise InvalidSpecError(f"{file}: not valid JSON: {exc}") from exc
        return cls.from_yaml(text)


def slug(text: str) -> str:
    """A name made from free text: ``Research Analyst`` -> ``research_analyst``."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", text.strip().lower()).strip("_")
    return cleaned[:100] or "agent"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_', '-' or '.', "
            "at most 100 characters"
        )
    return value


def _no_duplicates(kind: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate {kind} name(s): {', '.join(dupes)}")
