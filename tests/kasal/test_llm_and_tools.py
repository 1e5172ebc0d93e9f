"""LLM providers from model strings, error classification, the offline model, tools."""

from __future__ import annotations

import httpx
import openai
import pytest

from activities.journal import decode_response, encode_response
from kasal.exceptions import (
    ProviderAuthError,
    ProviderRateLimitError,
    ProviderUnavailableError,
    UnknownModelError,
    UnknownToolError,
)
from kasal.llm import (
    OfflineLLM,
    build_llm,
    classify_provider_error,
    offline_default_reason,
)
from kasal.spec import LLMSpec
from kasal.tools import resolve_tools


def _status_error(cls, code, headers=None):
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    response = httpx.Response(code, request=request, headers=headers or {})
    return cls("boom", response=response, body=None)


def test_offline_model_is_deterministic_and_follows_its_script():
    llm = OfflineLLM(
        model="offline/a",
        options={"script": [{"tool": "calculator", "input": {"expression": "1+1"}}]},
    )
    first = llm.call([{"role": "user", "content": "Current Task: add"}])
    assert "Action: calculator" in first and '"expression": "1+1"' in first
    second = llm.call([{"role": "user", "content": "Current Task: add"}])
    again = OfflineLLM(model="offline/a").call([{"role": "user", "content": "Current Task: add"}])
    assert second == again and "Final Answer: [offline/a] add" in second


def test_offline_failures_count_across_attempts():
    from activities.journal import LLMObserver, ObservedLLM
    from kasal.llm import CallContext

    for attempt, fails in [(1, True), (2, True), (3, False)]:
        inner = OfflineLLM(model="offline/f", options={"fail_first": 2, "fail_with": "rate_limit"})
        inner.bind(CallContext(attempt=attempt))
        # Observed, as in a task: CrewAI's own rate-limit retry steps aside for Temporal's.
        llm = ObservedLLM.wrap(inner, LLMObserver())
        if fails:
            with pytest.raises(ProviderRateLimitError):
                llm.call("hi")
        else:
            assert "Final Answer" in llm.call("hi")


def test_provider_errors_are_classified():
    assert isinstance(
        classify_provider_error(_status_error(openai.AuthenticationError, 401)), ProviderAuthError
    )
    limited = classify_provider_error(
        _status_error(openai.RateLimitError, 429, {"retry-after": "7"})
    )
    assert isinstance(limited, ProviderRateLimitError) and limited.retry_after == 7
    assert limited.retryable
    unavailable = classify_provider_error(_status_error(openai.InternalServerError, 503))
    assert isinstance(unavailable, ProviderUnavailableError) and unavailable.retryable
    assert isinstance(
        classify_provider_error(_status_error(openai.NotFoundError, 404)), UnknownModelError
    )
    wrapped = ValueError("wrapped")
    wrapped.__cause__ = _status_error(openai.PermissionDeniedError, 403)
    assert not classify_provider_error(wrapped).retryable  # type: ignore[attr-defined]


def test_models_resolve_from_strings_and_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    llm = build_llm(LLMSpec(model="openai/gpt-4o"))
    assert llm.model == "gpt-4o"
    monkeypatch.setenv("DATABRICKS_HOST", "adb-1.azuredatabricks.net")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-x")
    dbx = build_llm(LLMSpec(model="databricks/my-endpoint"))
    assert str(dbx.base_url).startswith("https://adb-1.azuredatabricks.net/serving-endpoints")
    ollama = build_llm(LLMSpec(model="ollama/llama3"))
    assert "11434" in str(ollama.base_url)
    with pytest.raises(UnknownModelError, match="unknown LLM provider"):
        build_llm(LLMSpec(model="acme/x"))
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        build_llm(LLMSpec(model="openai/gpt-4o"))
    with pytest.raises(UnknownModelError, match="base_url"):
        build_llm(LLMSpec(model="compatible/x"))


def test_offline_default_says_why(monkeypatch):
    for key in ("OPENAI_API_KEY", "DATABRICKS_TOKEN", "KASAL_LLM_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    assert "no provider key" in offline_default_reason()
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    assert offline_default_reason() is None


def test_journal_encoding_keeps_native_tool_calls():
    from openai.types.chat import ChatCompletionMessageToolCall

    call = ChatCompletionMessageToolCall.model_validate(
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    )
    assert decode_response(encode_response("plain")) == "plain"
    assert decode_response(encode_response([call])) == [call]


def test_tools_resolve_by_name_and_stay_safe(tmp_path, monkeypatch):
    calculator, reader = resolve_tools(["calculator", "file_read"])
    assert calculator.run(expression="(2 + 3) * 4") == "20"
    assert calculator.run(expression="__import__('os').system('true')").startswith("Error")
    assert calculator.run(expression="9 ** 999999").startswith("Error")
    from kasal.settings import get_settings

    settings = get_settings()
    monkeypatch.setattr(settings, "data_dir", tmp_path / ".kasal")
    monkeypatch.setattr(settings, "files_dir", None)  # default: <data_dir>/files
    (tmp_path / ".kasal" / "files").mkdir(parents=True)
    (tmp_path / ".kasal" / "files" / "notes.txt").write_text("hello")
    (tmp_path / ".kasal" / "kasal.db").write_text("secrets")
    assert reader.run(file_path="notes.txt") == "hello"
    assert "outside" in reader.run(file_path="../../etc/passwd")
    assert "outside" in reader.run(file_path="../kasal.db")
    # Even a files_dir that contains the data dir does not expose the databases.
    monkeypatch.setattr(settings, "files_dir", tmp_path)
    assert "outside" in reader.run(file_path=".kasal/kasal.db")
    # Arithmetic that would hold the GIL for minutes is refused at once.
    assert calculator.run(expression="(((10**100)**100)**100)**100").startswith("Error")
    assert calculator.run(expression="9**9**9").startswith("Error")
    assert calculator.run(expression="2.0**100000").startswith("Error")
    with pytest.raises(UnknownToolError, match="no_such"):
        resolve_tools(["no_such"])


def test_embedded_fallback_replaces_only_models_without_keys(monkeypatch):
    from kasal.llm import with_offline_fallback
    from tests.helpers import crew

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", "adb-1.net")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi")
    spec = crew(
        [{"name": "t", "description": "d"}],
        agents=[
            {"name": "a", "role": "A", "goal": "g", "model": "openai/gpt-4o"},
            {"name": "b", "role": "B", "goal": "g", "model": "databricks/endpoint"},
            {"name": "c", "role": "C", "goal": "g", "model": "offline/x"},
        ],
    )
    fallen, notes = with_offline_fallback(spec)
    assert [a.llm.model for a in fallen.agents] == [
        "offline/gpt-4o",
        "databricks/endpoint",
        "offline/x",
    ]
    assert notes == ["a: openai/gpt-4o -> offline/gpt-4o (OPENAI_API_KEY is not set)"]


def test_specs_cannot_send_keys_to_hosts_they_choose(monkeypatch):
    from kasal.exceptions import InvalidSpecError
    from kasal.settings import get_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setattr(get_settings(), "llm_base_urls", [])
    with pytest.raises(UnknownModelError, match="KASAL_LLM_BASE_URLS"):
        build_llm(LLMSpec(model="openai/gpt-4o", base_url="https://attacker.example/v1"))
    monkeypatch.setattr(get_settings(), "llm_base_urls", ["https://llm.internal/"])
    allowed = build_llm(LLMSpec(model="compatible/m", base_url="https://llm.internal/v1"))
    assert str(allowed.base_url).startswith("https://llm.internal/v1")
    # A spec may not name arbitrary variables of the worker's environment as its key.
    with pytest.raises(ValueError, match="api_key_env"):
        LLMSpec(model="openai/gpt-4o", api_key_env="KASAL_DATABASE_URL")
    assert LLMSpec(model="compatible/m", api_key_env="KASAL_LLM_KEY_TEAM").api_key_env
    assert issubclass(UnknownModelError, InvalidSpecError)  # never retried
