"""LLM providers, resolved from model strings (the wrapper that observes and journals each
call lives with the journal, in ``activities/journal.py``).

``openai/<model>``      OpenAI (OPENAI_API_KEY, optional OPENAI_BASE_URL)
``databricks/<name>``   a Databricks serving endpoint (DATABRICKS_HOST, DATABRICKS_TOKEN)
``ollama/<model>``      Ollama's OpenAI-compatible API (OLLAMA_HOST, default localhost:11434)
``compatible/<model>``  any OpenAI-compatible endpoint (``base_url`` in the spec or
                        KASAL_LLM_BASE_URL; key from ``api_key_env`` or KASAL_LLM_API_KEY)
``offline/<name>``      deterministic, no network: :class:`OfflineLLM`

Every real provider goes through CrewAI's native OpenAI client, so tests against a local
OpenAI-compatible stub server exercise the same code path production does. CrewAI and the
OpenAI SDK both retry on their own; Kasal turns that off, because Temporal owns retries and
must see every failure to count and report it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from crewai.llms.base_llm import BaseLLM
from pydantic import PrivateAttr

from kasal.exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnknownModelError,
)
from kasal.settings import get_settings
from kasal.spec import DEFAULT_PLANNING_MODEL, AgentSpec, CrewSpec, LLMSpec

PROVIDERS = (
    "openai",
    "databricks",
    "ollama",
    "compatible",
    "offline",
    "anthropic",
    "gemini",
    "azure",
    "bedrock",
)
#: Providers built by CrewAI's own ``LLM(...)`` routing (its native clients), and the
#: environment variable each needs.
CREWAI_NATIVE = {
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "azure": "AZURE_API_KEY",
    "bedrock": "AWS_ACCESS_KEY_ID",
}


@dataclass
class CallContext:
    """Where a call happens: lets the offline provider count failures across attempts."""

    attempt: int = 1
    #: Calls made for this conversation by earlier activities (a manager's earlier steps).
    offset: int = 0


class OfflineLLM(BaseLLM):
    """A deterministic model that needs no network.

    Its answer is derived from the prompt (same prompt, same answer). Options:

    - ``script``: responses used in order, one per call; each a string (CrewAI ReAct text),
      ``{"tool": name, "input": {...}}`` for a tool-use step, or ``{"final": text}``.
      When the script runs out the derived answer is used.
    - ``latency_ms``: added to each call (sleeps in slices, so cancellation is prompt).
    - ``fail_first``: the first N calls of a task fail, counted across retried attempts.
    - ``fail_with``: ``unavailable`` (default), ``rate_limit``, ``timeout`` or ``auth``.
    """

    llm_type: str = "offline"
    options: dict[str, Any] = {}
    _calls: int = PrivateAttr(default=0)
    _context: CallContext = PrivateAttr(default_factory=CallContext)
    _abort: Callable[[], None] | None = PrivateAttr(default=None)

    def bind(self, context: CallContext, abort: Callable[[], None] | None = None) -> None:
        """Tell the model which attempt it runs in and how to notice cancellation."""
        self._context = context
        self._abort = abort

    def supports_function_calling(self) -> bool:
        return False

    def note_replayed(self) -> None:
        """A call answered from the journal: the script moves on as if it had answered."""
        self._calls += 1

    def call(  # type: ignore[override]
        self,
        messages: str | list[dict[str, Any]],
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        msgs = _as_messages(messages)
        index = self._context.offset + self._calls
        self._calls += 1
        self._sleep(float(self.options.get("latency_ms", 0)) / 1000)
        fail_first = int(self.options.get("fail_first", 0))
        # Each failed attempt fails at its first call, so earlier attempts made exactly
        # ``attempt - 1`` calls: this counts calls across attempts without shared state.
        if (self._context.attempt - 1) + self._calls - 1 < fail_first:
            raise _offline_failure(str(self.options.get("fail_with", "unavailable")))
        script = list(self.options.get("script", []))
        schema = _schema_of(response_model) or _schema_in_prompt(msgs)
        if index < len(script):
            text = _render_step(script[index])
        elif schema is not None:
            # A structured task: an answer that validates against its schema, so crews
            # with output_json / output_pydantic run end to end with no network.
            instance = instance_of_schema(schema, seed=derive_answer(self.model, msgs))
            if isinstance(instance, dict) and "list_of_plans_per_task" in instance:
                instance["list_of_plans_per_task"] = _offline_plans(self.model, msgs)
            text = json.dumps(instance)
            if response_model is None:
                text = "Thought: I now know the final answer\nFinal Answer: " + text
        else:
            text = "Thought: I now know the final answer\nFinal Answer: " + derive_answer(
                self.model, msgs
            )
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in msgs) // 4 + 1
        self._track_token_usage_internal(
            {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text) // 4 + 1,
                "total_tokens": prompt_tokens + len(text) // 4 + 1,
            }
        )
        return text

    # Temporal owns retries: keep CrewAI from wrapping this call in its rate-limit retry.
    call._crewai_rate_limit_wrapped = True  # type: ignore[attr-defined]

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._abort:
                self._abort()
            time.sleep(min(left, 0.05))


def _as_messages(messages: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


_SCHEMA_MARK = "according to the following OpenAPI schema:"


def _schema_of(response_model: Any) -> dict[str, Any] | None:
    if response_model is None:
        return None
    if isinstance(response_model, dict):
        return response_model
    schema = getattr(response_model, "model_json_schema", None)
    return schema() if callable(schema) else None


def _schema_in_prompt(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON Schema CrewAI puts in a structured task's prompt (its
    ``formatted_task_instructions``), if the prompt carries one."""
    for message in reversed(messages):
        content = str(message.get("content", ""))
        at = content.rfind(_SCHEMA_MARK)
        if at < 0:
            continue
        try:
            found, _ = json.JSONDecoder().raw_decode(content[at + len(_SCHEMA_MARK) :].lstrip())
        except ValueError:
            continue
        if isinstance(found, dict):
            inner = found.get("json_schema", {})
            if isinstance(inner, dict) and isinstance(inner.get("schema"), dict):
                return dict(inner["schema"])
            return found
    return None


def instance_of_schema(schema: dict[str, Any], seed: str = "", *, _root: Any = None) -> Any:
    """A value that validates against ``schema`` (objects, arrays, scalars, enums, refs).

    Strings carry ``seed`` (the offline answer to the prompt), so different prompts give
    different, still deterministic, structured answers.
    """
    root = schema if _root is None else _root
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        target = root.get("$defs", root.get("definitions", {})).get(name, {})
        return instance_of_schema(target, seed, _root=root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if options:
            return instance_of_schema(options[0], seed, _root=root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return instance_of_schema(merged, seed, _root=root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {
            name: instance_of_schema(sub, f"{name}: {seed}", _root=root)
            for name, sub in props.items()
        }
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [instance_of_schema(schema.get("items", {}), seed, _root=root)] * count
    if kind == "integer":
        return int(schema.get("minimum", schema.get("exclusiveMinimum", 0) + 0) or 1)
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    text = seed or "offline"
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    text = text.ljust(low, ".")
    return text[: int(high)] if high is not None else text


def _offline_plans(model: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CrewAI's planner asks for one plan per task ("Task Number N - ..."): one each."""
    prompt = "\n".join(str(m.get("content", "")) for m in messages)
    found = re.findall(r"Task Number (\d+) - ([^\n]*)", prompt)
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return [
        {
            "task_number": int(number),
            "task": text.strip()[:200],
            "plan": f"\n\n[offline plan {digest}] Step 1: work on {text.strip()[:120]}. "
            "Step 2: check the result against the expected output.",
        }
        for number, text in dict(found).items()
    ] or [{"task_number": 1, "task": "task", "plan": f"[offline plan {digest}]"}]


def derive_answer(model: str, messages: list[dict[str, Any]]) -> str:
    """The offline answer to a prompt: names the task and carries a digest of the prompt."""
    prompt = "\n".join(str(m.get("content", "")) for m in messages)
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
    match = re.search(r"Current Task:\s*(.+)", prompt)
    task = match.group(1).strip() if match else prompt.strip().splitlines()[-1:] or [""]
    task_text = task if isinstance(task, str) else task[0]
    return f"[{model}] {task_text[:200]} (digest {digest})"


def _render_step(step: Any) -> str:
    if isinstance(step, str):
        return step
    if isinstance(step, dict) and "tool" in step:
        return (
            f"Thought: I should use {step['tool']}\n"
            f"Action: {step['tool']}\n"
            f"Action Input: {json.dumps(step.get('input', {}))}"
        )
    if isinstance(step, dict) and "delegate" in step:
        return (
            f"Action: delegate\nCoworker: {step['delegate']}\nTask: {step.get('task', '')}\n"
            f"Context: {step.get('context', '')}"
        )
    if isinstance(step, dict) and "final" in step:
        return f"Thought: I now know the final answer\nFinal Answer: {step['final']}"
    raise UnknownModelError(
        f"offline script step {step!r} is not a string, tool, delegate or final"
    )


def _offline_failure(kind: str) -> ProviderError:
    if kind == "rate_limit":
        return ProviderRateLimitError("offline provider: rate limited (scripted)", retry_after=0)
    if kind == "timeout":
        return ProviderTimeoutError("offline provider: timed out (scripted)")
    if kind == "auth":
        return ProviderAuthError("offline provider: invalid API key (scripted)")
    return ProviderUnavailableError("offline provider: 503 service unavailable (scripted)")


def classify_provider_error(exc: BaseException) -> Exception:
    """Map an exception from a provider SDK to a Kasal error that says if retrying helps."""
    import openai

    for err in error_chain(exc):
        if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderAuthError(f"provider rejected the credentials: {_brief(err)}")
        if isinstance(err, openai.RateLimitError):
            return ProviderRateLimitError(
                f"provider rate limit: {_brief(err)}", retry_after=_retry_after(err)
            )
        if isinstance(err, openai.APITimeoutError | TimeoutError):
            return ProviderTimeoutError(f"provider timed out: {_brief(err)}")
        if isinstance(err, openai.NotFoundError):
            return UnknownModelError(f"provider does not know the model: {_brief(err)}")
        if isinstance(err, openai.InternalServerError | openai.APIConnectionError):
            return ProviderUnavailableError(f"provider unavailable: {_brief(err)}")
        if isinstance(err, ConnectionError):
            return ProviderUnavailableError(f"provider unreachable: {_brief(err)}")
        if isinstance(err, openai.APIStatusError):
            error = ProviderError(f"provider answered {err.status_code}: {_brief(err)}")
            error.retryable = err.status_code >= 500 or err.status_code in (408, 409, 429)
            return error
    if isinstance(exc, Exception):
        return exc
    return RuntimeError(str(exc))


def error_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (``__cause__``, else ``__context__``), each once: a chain can
    loop back on itself (an error raised while handling the one that caused it)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _brief(err: BaseException) -> str:
    return str(err).splitlines()[0][:300] if str(err) else type(err).__name__


def _retry_after(err: Any) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_build_lock = threading.Lock()

#: OpenAI SDK clients shared by every task of this worker, per client configuration.
#: Building one costs ~26 ms of CPU (httpx loads the CA bundle into a new SSL context),
#: and CrewAI built a sync and an async client for every activity: ~53 ms under
#: ``_build_lock`` before the first request (measured), plus a new connection per task.
#: Sharing it: a 10-task crew on a local OpenAI-compatible stub, 121-132 -> 51-62 ms/task.
#: The SDK's sync client is thread-safe. An async client's connections belong to the event
#: loop it is used on, so async clients are shared per loop: a worker's tasks await their
#: provider calls on one loop kept for them (:func:`activities.journal.provider_loop`).
_SYNC_CLIENTS: dict[str, Any] = {}
_ASYNC_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_CLIENTS_MAX = 32


def _shared_client(llm: Any, *, awaited: bool) -> Any:
    """The OpenAI client (sync, or async for the running loop) for ``llm``'s configuration,
    built once per worker."""
    params = llm._get_client_params()
    key = repr(sorted(params.items()))
    if awaited:
        clients = _ASYNC_CLIENTS.setdefault(asyncio.get_running_loop(), {})
    else:
        clients = _SYNC_CLIENTS
    client = clients.get(key)
    if client is None:
        client = _new_client(llm, params, awaited=awaited)
        if len(clients) >= _CLIENTS_MAX:
            clients.pop(next(iter(clients)))  # the oldest; its users keep it
        clients[key] = client
    return client


def _new_client(llm: Any, params: dict[str, Any], *, awaited: bool) -> Any:
    """CrewAI's client for ``llm`` (``OpenAI(**params)`` or ``AsyncOpenAI``), its
    connections in small pools (:mod:`kasal.http_pool`): a worker's calls all share it."""
    if "http_client" in params:  # the spec's own client: left as CrewAI builds it
        return llm._build_async_client() if awaited else llm._build_sync_client()
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient, DefaultHttpxClient, OpenAI

    from kasal.http_pool import AsyncShardedTransport, ShardedTransport

    if awaited:
        http = DefaultAsyncHttpxClient(transport=AsyncShardedTransport())
        return AsyncOpenAI(**params, http_client=http)
    return OpenAI(**params, http_client=DefaultHttpxClient(transport=ShardedTransport()))


def _openai_completion_class() -> type[BaseLLM]:
    """CrewAI's OpenAI LLM, with per-worker clients instead of two fresh ones per LLM."""
    global _OpenAICompletion
    if _OpenAICompletion is None:
        from crewai.llms.providers.openai.completion import OpenAICompletion
        from pydantic import model_validator

        class SharedClientOpenAICompletion(OpenAICompletion):
            #: Its calls can be awaited on an event loop (``acall``), holding no
            #: thread while the provider answers.
            awaitable_calls: ClassVar[bool] = True

            # Same name as the parent's validator, so it replaces it.
            @model_validator(mode="after")
            def _init_clients(self) -> SharedClientOpenAICompletion:
                if self.interceptor is not None:  # a per-LLM transport: nothing to share
                    return super()._init_clients()  # type: ignore[no-any-return, operator]
                # No key yet (ValueError): CrewAI builds the client on first use.
                with contextlib.suppress(ValueError):
                    self._client = _shared_client(self, awaited=False)
                return self

            def _get_async_client(self) -> Any:
                if self._async_client is not None or self.interceptor is not None:
                    return super()._get_async_client()
                try:
                    asyncio.get_running_loop()
                except RuntimeError:  # asked outside a loop (CrewAI's file uploader): its own
                    return super()._get_async_client()
                return _shared_client(self, awaited=True)

        _OpenAICompletion = SharedClientOpenAICompletion
    return _OpenAICompletion


_OpenAICompletion: type[BaseLLM] | None = None


def build_llm(spec: LLMSpec) -> BaseLLM:
    """The provider LLM a spec names. Secrets come only from the environment."""
    provider, name = spec.model.split("/", 1)
    if provider == "offline":
        return OfflineLLM(model=spec.model, options=dict(spec.options))
    if spec.base_url and not get_settings().allows_base_url(spec.base_url):
        raise UnknownModelError(
            f"base_url {spec.base_url!r} is not allowed on this worker: an operator lists the "
            "endpoints specs may use in KASAL_LLM_BASE_URLS",
            field="llm.base_url",
        )
    if provider == "openai":
        base_url = spec.base_url or os.getenv("OPENAI_BASE_URL")
        key = _key(spec, "OPENAI_API_KEY")
    elif provider == "databricks":
        host = os.getenv("DATABRICKS_HOST", "").rstrip("/")
        if not spec.base_url and not host:
            raise UnknownModelError("databricks models need DATABRICKS_HOST", field="llm.model")
        if host and not host.startswith("http"):
            host = f"https://{host}"
        base_url = spec.base_url or f"{host}/serving-endpoints"
        key = _key(spec, "DATABRICKS_TOKEN")
    elif provider == "ollama":
        host = os.getenv("OLLAMA_HOST", "http://localhost:11434").rstrip("/")
        if not host.startswith("http"):
            host = f"http://{host}"
        base_url = spec.base_url or f"{host}/v1"
        key = _key(spec, "OLLAMA_API_KEY", default="ollama")
    elif provider in CREWAI_NATIVE:
        return _crewai_native_llm(spec)
    elif provider == "compatible":
        base_url = spec.base_url or os.getenv("KASAL_LLM_BASE_URL")
        if not base_url:
            raise UnknownModelError(
                "compatible/ models need base_url in the spec or KASAL_LLM_BASE_URL",
                field="llm.base_url",
            )
        key = _key(spec, "KASAL_LLM_API_KEY", default="not-needed")
    else:
        raise UnknownModelError(
            f"unknown LLM provider {provider!r} in {spec.model!r}; known: {', '.join(PROVIDERS)}",
            field="llm.model",
        )
    if not key:
        raise ProviderAuthError(
            f"no API key for {spec.model!r}: set "
            f"{spec.api_key_env or _default_key_env(provider)} in the worker's environment"
        )
    kwargs: dict[str, Any] = {
        "model": name,
        "api_key": key,
        "base_url": base_url,
        "timeout": spec.timeout,
        "max_retries": 0,
        "provider": "openai",
    }
    if spec.temperature is not None:
        kwargs["temperature"] = spec.temperature
    if spec.max_tokens is not None:
        kwargs["max_tokens"] = spec.max_tokens
    with _build_lock:
        return _openai_completion_class()(**kwargs)


def _crewai_native_llm(spec: LLMSpec) -> BaseLLM:
    """Anthropic, Gemini, Azure, Bedrock: CrewAI's own ``LLM(...)`` routing and clients."""
    from crewai import LLM

    env = spec.api_key_env or CREWAI_NATIVE[spec.provider]
    if not os.getenv(env):
        raise ProviderAuthError(
            f"no API key for {spec.model!r}: set {env} in the worker's environment"
        )
    kwargs: dict[str, Any] = {"model": spec.model, "timeout": spec.timeout}
    if spec.api_key_env:
        kwargs["api_key"] = os.getenv(spec.api_key_env)
    if spec.base_url:
        kwargs["base_url"] = spec.base_url
    if spec.temperature is not None:
        kwargs["temperature"] = spec.temperature
    if spec.max_tokens is not None:
        kwargs["max_tokens"] = spec.max_tokens
    try:
        with _build_lock:
            return LLM(**kwargs)
    except ImportError as exc:
        raise UnknownModelError(
            f"{spec.provider} models need CrewAI's {spec.provider} extra on the workers "
            f"(pip install 'crewai[{spec.provider}]'): {exc}",
            field="llm.model",
        ) from exc


def _default_key_env(provider: str) -> str:
    return {
        "openai": "OPENAI_API_KEY",
        "databricks": "DATABRICKS_TOKEN",
        "ollama": "OLLAMA_API_KEY",
    }.get(provider, "KASAL_LLM_API_KEY")


def _key(spec: LLMSpec, env: str, default: str | None = None) -> str | None:
    return os.getenv(spec.api_key_env or env) or default


def missing_provider_key(spec: LLMSpec) -> str | None:
    """The environment variable a model needs but does not have, or None."""
    provider = spec.provider
    if provider == "compatible":
        return None if spec.base_url or os.getenv("KASAL_LLM_BASE_URL") else "KASAL_LLM_BASE_URL"
    if provider == "databricks" and not (spec.base_url or os.getenv("DATABRICKS_HOST")):
        return "DATABRICKS_HOST"
    if provider in CREWAI_NATIVE:
        env = spec.api_key_env or CREWAI_NATIVE[provider]
        return None if os.getenv(env) else env
    if provider not in ("openai", "databricks"):
        return None  # offline and ollama need no key; unknown providers fail on their own
    env = spec.api_key_env or _default_key_env(provider)
    return None if os.getenv(env) else env


def with_offline_fallback(spec: CrewSpec) -> tuple[CrewSpec, list[str]]:
    """The embedded default's promise: a crew runs on a fresh machine.

    Every agent (and manager) whose provider key is missing gets the offline model of the
    same name instead; the notes say which and why. Only the CLI's embedded default does
    this: a configured worker fails with a clear provider error rather than pretend.
    """
    notes: list[str] = []

    def fallback(owner: str, llm: LLMSpec) -> LLMSpec:
        missing = missing_provider_key(llm)
        if missing is None:
            return llm
        offline = f"offline/{llm.model.split('/', 1)[1]}"
        notes.append(f"{owner}: {llm.model} -> {offline} ({missing} is not set)")
        return llm.model_copy(update={"model": offline})

    agents = [a.model_copy(update={"llm": fallback(a.name, a.llm)}) for a in spec.agents]
    update: dict[str, Any] = {"agents": agents}
    if spec.manager_llm is not None:
        update["manager_llm"] = fallback("manager", spec.manager_llm)
    if spec.manager_agent is not None:
        manager = spec.manager_agent
        update["manager_agent"] = manager.model_copy(
            update={"llm": fallback(manager.name, manager.llm)}
        )
    if spec.planning:
        update["planning_llm"] = fallback(
            "planner", spec.planning_llm or LLMSpec(model=DEFAULT_PLANNING_MODEL)
        )
    for index, agent in enumerate(agents):
        if agent.function_calling_llm is not None:
            agents[index] = agent.model_copy(
                update={
                    "function_calling_llm": fallback(
                        f"{agent.name} (function_calling_llm)", agent.function_calling_llm
                    )
                }
            )
    return spec.model_copy(update=update), notes


def all_offline(spec: CrewSpec) -> CrewSpec:
    """``KASAL_OFFLINE=1`` / ``kasal run --offline``: every agent, manager and planner on
    the offline model of the same name (deterministic, no network)."""

    def off(llm: LLMSpec | None) -> LLMSpec | None:
        if llm is None or llm.provider == "offline":
            return llm
        return llm.model_copy(update={"model": f"offline/{llm.model.split('/', 1)[1]}"})

    def agent(a: AgentSpec) -> AgentSpec:
        return a.model_copy(
            update={"llm": off(a.llm), "function_calling_llm": off(a.function_calling_llm)}
        )

    update: dict[str, Any] = {"agents": [agent(a) for a in spec.agents]}
    update["manager_llm"] = off(spec.manager_llm)
    if spec.manager_agent is not None:
        update["manager_agent"] = agent(spec.manager_agent)
    if spec.planning:
        update["planning_llm"] = off(spec.planning_llm or LLMSpec(model=DEFAULT_PLANNING_MODEL))
    return spec.model_copy(update=update)


def offline_default_reason() -> str | None:
    """Why the embedded default falls back to the offline provider, or None if it need not."""
    if any(os.getenv(k) for k in ("OPENAI_API_KEY", "DATABRICKS_TOKEN", "KASAL_LLM_BASE_URL")):
        return None
    return "no provider key configured (OPENAI_API_KEY, DATABRICKS_TOKEN, KASAL_LLM_BASE_URL)"
