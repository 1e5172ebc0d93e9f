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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from kasal.exceptions import InvalidSpecError

#: Default model when an agent names none: CrewAI's default (``crewai.constants.
#: DEFAULT_LLM_MODEL``), on OpenAI. The offline model runs only when asked for
#: (``KASAL_OFFLINE=1``, ``kasal run --offline``) or by the embedded fallback, which says so.
DEFAULT_MODEL = "openai/gpt-4.1-mini"
#: CrewAI's planner model when a crew plans without ``planning_llm``
#: (``crewai.utilities.planning_handler.CrewPlanner``).
DEFAULT_PLANNING_MODEL = "openai/gpt-5.4-mini"
#: CrewAI providers Kasal knows by their prefix; a model string without one is OpenAI's.
KNOWN_PROVIDERS = (
    "openai",
    "anthropic",
    "gemini",
    "azure",
    "bedrock",
    "ollama",
    "databricks",
    "compatible",
    "offline",
)
#: What a facade task without ``expected_output`` expects (CrewAI requires the field; the
#: Kasal documentation's ``Task(description=..., agent=...)`` leaves it out).
DEFAULT_EXPECTED_OUTPUT = "A complete, accurate answer to the task described above."

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _refuse(data: Any, refused: dict[str, str], kind: str) -> None:
    """CrewAI fields Kasal cannot honour durably are refused, each with its reason."""
    if not isinstance(data, dict):
        return
    for key, why in refused.items():
        if key in data and data[key] not in (None, False, [], {}):
            raise ValueError(f"{kind} field {key!r} is not supported by Kasal: {why}")


def _merge_config(data: Any) -> Any:
    """CrewAI's ``config``: a mapping of the object's own fields (agents.yaml / tasks.yaml
    entries), explicit fields winning, as in CrewAI's ``process_config``."""
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = dict(data)
        config = data.pop("config")
        for key, value in config.items():
            if data.get(key) is None:
                data[key] = value
    elif isinstance(data, dict) and "config" in data and data["config"] is None:
        data = {k: v for k, v in data.items() if k != "config"}
    return data


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

    @model_validator(mode="before")
    @classmethod
    def _accept_plain_string(cls, data: Any) -> Any:
        return {"model": data} if isinstance(data, str) else data

    @field_validator("model")
    @classmethod
    def _model_has_provider(cls, value: str) -> str:
        value = value.strip()
        provider, sep, name = value.partition("/")
        if not sep:
            # As in CrewAI: a bare model name (``gpt-4o-mini``) is OpenAI's.
            return f"openai/{value}" if value else value
        if not provider or not name:
            raise ValueError(
                f"model {value!r} must be '<model>' (OpenAI) or '<provider>/<model>', e.g. "
                "'gpt-4o-mini', 'anthropic/claude-3-5-sonnet-latest' or 'offline/default'"
            )
        return value

    @property
    def provider(self) -> str:
        """The part of the model string before the first slash."""
        return self.model.split("/", 1)[0]


#: Agent fields of CrewAI that Kasal refuses, and why.
AGENT_REFUSED: dict[str, str] = {
    "step_callback": "a function cannot travel in a crew spec; give it to the facade's Crew "
    "(step_callback) or keep it in a CrewAI project, whose code the workers run",
    "callbacks": "deprecated in CrewAI; use the crew's step_callback",
    "allow_code_execution": "CrewAI no longer ships a code interpreter; use a tool",
    "code_execution_mode": "CrewAI no longer ships a code interpreter; use a tool",
    "multimodal": "deprecated in CrewAI; pass files natively",
    "agent_executor": "Kasal builds the executor for each task attempt",
    "executor_class": "Kasal builds the executor for each task attempt",
    "cache_handler": "a process-local cache does not survive a worker; tool results are "
    "journaled instead",
    "tools_handler": "Kasal observes tools itself (events and journal)",
    "crew": "set by the crew",
    "knowledge": "give knowledge_sources (issue #8) instead of a built Knowledge object",
    "knowledge_storage": "storage belongs to the workers' configuration",
    "apps": "CrewAI platform apps need the CrewAI platform",
    "mcps": "MCP servers are not supported by Kasal workers yet",
    "from_repository": "agents from the CrewAI repository need the CrewAI platform",
    "guardrail": "put the guardrail on the task (Task.guardrail)",
    "use_better_compaction": "not supported yet",
    "checkpoint": "Temporal and the journal are Kasal's checkpoints",
}

#: Task fields of CrewAI that Kasal refuses, and why.
TASK_REFUSED: dict[str, str] = {
    "callback": "a function cannot travel in a crew spec; give it to the facade's Task or "
    "keep it in a CrewAI project, whose code the workers run",
    "converter_cls": "a class cannot travel in a crew spec; use output_json/output_pydantic",
    "response_model": "use output_pydantic (a JSON Schema in a data spec)",
    "input_files": "files travel through the files directory (KASAL_FILES_DIR) and tools",
    "guardrails": "give one guardrail (a text rule, checked by an LLM)",
    "output": "set by the run",
    "security_config": "not supported yet",
}

#: Crew fields of CrewAI that Kasal refuses, and why.
CREW_REFUSED: dict[str, str] = {
    "step_callback": "a function cannot travel in a crew spec; give it to the facade's Crew "
    "or keep it in a CrewAI project",
    "task_callback": "a function cannot travel in a crew spec; give it to the facade's Crew "
    "or keep it in a CrewAI project",
    "before_kickoff_callbacks": "a function cannot travel in a crew spec; use a CrewAI "
    "project (@before_kickoff runs where the crew is built)",
    "after_kickoff_callbacks": "a function cannot travel in a crew spec; use a CrewAI project",
    "function_calling_llm": "give function_calling_llm per agent",
    "share_crew": "Kasal sends nothing to CrewAI's servers",
    "stream": "follow the execution's event stream (WebSocket, `kasal run`) instead",
    "prompt_file": "not supported yet",
    "output_log_file": "every event is in the execution's trace (GET .../trace)",
    "chat_llm": "CrewAI's chat mode is interactive; Kasal executions are not",
    "checkpoint": "Temporal and the journal are Kasal's checkpoints",
    "tracing": "use Kasal's trace and the Temporal Web UI",
    "skills": "not supported yet",
    "security_config": "not supported yet",
}


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
    """An agent, with CrewAI's field names and defaults (``crewai.Agent``).

    ``llm`` names a model (no provider prefix means OpenAI; none at all means CrewAI's
    default model). ``config`` is a mapping of these fields (an agents.yaml entry).
    """

    name: str
    role: str = Field(min_length=1)
    goal: str = Field(min_length=1)
    backstory: str = ""
    llm: LLMSpec = Field(default_factory=LLMSpec)
    #: The model that makes tool calls, if not ``llm`` (CrewAI's ``function_calling_llm``).
    function_calling_llm: LLMSpec | None = None
    tools: list[str] = Field(default_factory=list)
    max_iter: int = Field(default=25, ge=1, le=500)
    #: Delegation among the crew's agents; each delegation's calls are journaled.
    allow_delegation: bool = False
    #: Requests per minute this agent makes (per task attempt, on its worker).
    max_rpm: int | None = Field(default=None, gt=0)
    #: Seconds one attempt of a task may take; past it: TaskTimeoutError (retried).
    max_execution_time: int | None = Field(default=None, gt=0)
    #: Retries of a failing task: Temporal's attempts are ``max_retry_limit + 1`` unless the
    #: task sets ``retry``. Unset: CrewAI's 2, which is the crew's ``retry`` (3 attempts).
    max_retry_limit: int | None = Field(default=None, ge=0, le=99)
    respect_context_window: bool = True
    inject_date: bool = False
    date_format: str = "%Y-%m-%d"
    reasoning: bool = False
    max_reasoning_attempts: int | None = Field(default=None, ge=1)
    system_template: str | None = None
    prompt_template: str | None = None
    response_template: str | None = None
    use_system_prompt: bool = True
    verbose: bool = False
    cache: bool = True
    max_tokens: int | None = Field(default=None, gt=0)
    #: Arguments of tools built from ``crewai_tools`` classes, by tool name.
    tool_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    knowledge_sources: list[KnowledgeSourceSpec] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _accept_model_shorthand(cls, data: Any) -> Any:
        # ``model: openai/gpt-4o`` is shorthand for ``llm: {model: openai/gpt-4o}``, as in
        # CrewAI, where an agent's ``llm`` is usually just a model string.
        data = _merge_config(data)
        _refuse(data, AGENT_REFUSED, "agent")
        data = _split_tool_args(data)
        if isinstance(data, dict):
            data = dict(data)
            model = data.pop("model", None)
            llm = data.get("llm")
            if isinstance(llm, str):
                data["llm"] = {"model": llm}
            if llm is None:
                data.pop("llm", None)
            if model is not None:
                data.setdefault("llm", {})
                if isinstance(data["llm"], dict):
                    data["llm"] = {**data["llm"], "model": model}
            if isinstance(data.get("function_calling_llm"), str):
                data["function_calling_llm"] = {"model": data["function_calling_llm"]}
            if "name" not in data and isinstance(data.get("role"), str):
                data["name"] = slug(data["role"])
            for key in ("role", "goal", "backstory"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].strip()
        return data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value)


JsonSchema = dict[str, Any]


class TaskSpec(_Strict):
    """A task, with CrewAI's field names and defaults (``crewai.Task``).

    ``context`` names the tasks whose outputs this task sees; when it is not given, CrewAI's
    rules apply (see :meth:`CrewSpec.context_for`). ``output_json`` / ``output_pydantic``
    are JSON Schemas here (a Pydantic class in code, which the facade turns into its
    schema). ``guardrail`` is a text rule an LLM checks (a function in code).
    """

    name: str
    description: str = Field(min_length=1)
    expected_output: str = Field(default=DEFAULT_EXPECTED_OUTPUT, min_length=1)
    agent: str
    context: list[str] | None = None
    async_execution: bool = False
    human_input: bool = False
    #: How long a ``human_input`` task waits for feedback; None waits for ever.
    human_input_timeout: Seconds | None = None
    #: What happens when that wait times out: take the output as approved, or fail.
    human_input_timeout_outcome: Literal["approve", "fail"] = "approve"
    tools: list[str] = Field(default_factory=list)
    output_json: JsonSchema | None = None
    output_pydantic: JsonSchema | None = None
    #: Written under the files directory (KASAL_FILES_DIR); never outside it.
    output_file: str | None = Field(default=None, max_length=500)
    create_directory: bool = True
    markdown: bool = False
    #: A text rule checked by an LLM after each answer; a failing answer is redone.
    guardrail: str | None = Field(default=None, max_length=20_000)
    #: A function given to the facade (registered in its process), by its registry key.
    guardrail_callable: str | None = None
    #: A function the facade registered to run after the task (CrewAI's ``callback``).
    callback_callable: str | None = None
    guardrail_max_retries: int = Field(default=3, ge=0, le=50)
    #: Arguments of tools built from ``crewai_tools`` classes, by tool name.
    tool_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retry: RetrySpec | None = None
    timeout: TimeoutSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _crewai_shapes(cls, data: Any) -> Any:
        data = _merge_config(data)
        _refuse(data, TASK_REFUSED, "task")
        data = _split_tool_args(data)
        if isinstance(data, dict):
            data = dict(data)
            if "max_retries" in data:  # CrewAI's deprecated name
                retries = data.pop("max_retries")
                if retries is not None:
                    data.setdefault("guardrail_max_retries", retries)
            for key in ("description", "expected_output"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].strip()
        return data

    @model_validator(mode="after")
    def _one_output_format(self) -> TaskSpec:
        if self.output_json is not None and self.output_pydantic is not None:
            raise ValueError("give output_json or output_pydantic, not both (as in CrewAI)")
        for key in ("output_json", "output_pydantic"):
            schema = getattr(self, key)
            if schema is not None and schema.get("type", "object") != "object":
                raise ValueError(f"{key} must be a JSON Schema of an object")
        if self.output_file is not None:
            path = Path(self.output_file)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(
                    f"output_file {self.output_file!r} must be a relative path without '..': "
                    "outputs are written under the files directory (KASAL_FILES_DIR)"
                )
        return self

    @property
    def output_format(self) -> str:
        """CrewAI's ``OutputFormat`` value of this task: ``json``, ``pydantic`` or ``raw``."""
        if self.output_json is not None:
            return "json"
        if self.output_pydantic is not None:
            return "pydantic"
        return "raw"

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
    #: CrewAI's planning: one plan made first (its own activity), given to every task.
    planning: bool = False
    planning_llm: LLMSpec | None = None
    #: Requests per minute for agents that set none (CrewAI's crew-wide ``max_rpm``).
    max_rpm: int | None = Field(default=None, gt=0)
    verbose: bool = False
    cache: bool = True
    #: A code crew: the registered CrewAI project whose code the workers run.
    project: str | None = Field(default=None, max_length=200)
    #: Facade callables registered in its process (CrewAI's step/task callbacks).
    step_callback_callable: str | None = None
    task_callback_callable: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _crewai_shapes(cls, data: Any) -> Any:
        data = _merge_config(data)
        _refuse(data, CREW_REFUSED, "crew")
        if isinstance(data, dict):
            data = dict(data)
            process = data.get("process")
            if process is not None and not isinstance(process, str):
                data["process"] = getattr(process, "value", process)  # crewai.Process
            for key in ("manager_llm", "planning_llm"):
                if isinstance(data.get(key), str):
                    data[key] = {"model": data[key]}
            # CrewAI's own layout: agents and tasks as mappings keyed by name.
            for key in ("agents", "tasks"):
                if isinstance(data.get(key), dict):
                    data[key] = [
                        {"name": name, **(entry or {})} for name, entry in data[key].items()
                    ]
        return data

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
        if self.process == "hierarchical":
            for index, task in enumerate(self.tasks):
                refused = ("output_json", "output_pydantic", "output_file", "guardrail")
                for key in (*refused, "guardrail_callable"):
                    if getattr(task, key) is not None:
                        raise ValueError(
                            f"tasks[{index}] ({task.name!r}): {key.removesuffix('_callable')} "
                            "is not supported with the hierarchical process yet (the "
                            "manager's final answer is not converted or checked); use a "
                            "sequential crew"
                        )
        return self

    def retry_for_agent(self, task: TaskSpec) -> RetrySpec:
        """The task's retry policy: its own, else the agent's ``max_retry_limit`` when set,
        else the crew's (``max_retry_limit`` 2, CrewAI's default, is the crew's 3 attempts)."""
        if task.retry is not None:
            return task.retry
        try:
            agent = self.agent(task.agent)
        except KeyError:
            return self.retry
        if agent.max_retry_limit is not None:
            return self.retry.model_copy(update={"maximum_attempts": agent.max_retry_limit + 1})
        return self.retry

    # -- behaviour derived from the data -------------------------------------------------

    def agent(self, name: str) -> AgentSpec:
        """The agent called ``name``."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    def retry_for(self, task: TaskSpec) -> RetrySpec:
        """The task's retry policy, or the agent's ``max_retry_limit``, or the crew's."""
        return self.retry_for_agent(task)

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
            texts += [task.description, task.expected_output, task.output_file or ""]
        for text in texts:
            found.update(_PLACEHOLDER_RE.findall(text))
        return found

    def interpolated(self, inputs: dict[str, Any] | None = None) -> CrewSpec:
        """A copy with ``{placeholders}`` filled from the spec's inputs overlaid with ``inputs``
        (the spec itself when it has no placeholders and no ``inputs`` are given: a running
        workflow then holds one spec, not two).

        Raises :class:`InvalidSpecError` naming any placeholder that has no value. Braces
        that are not placeholders (JSON examples in a description) are left alone.
        """
        values = {**self.inputs, **(inputs or {})}
        placeholders = self.placeholders()
        missing = sorted(placeholders - set(values))
        if missing:
            raise InvalidSpecError(
                f"missing input(s) for placeholder(s): {', '.join(missing)}",
                field="inputs",
            )
        if not placeholders and not inputs:
            return self

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
            if task["output_file"]:
                task["output_file"] = fill(task["output_file"])
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


def _carried(spec: CrewSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_defaults=True)


#: A crew spec as workflow and activity inputs carry it: only the fields that differ from
#: their defaults, which validation fills in again on the other side. Every activity input
#: is stored in the workflow's history and read by a worker: a one-task input is 300 bytes
#: instead of 1,900 (the whole CrewAI field set, nearly all defaults).
CarriedSpec = Annotated[CrewSpec, PlainSerializer(_carried, when_used="json")]


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
