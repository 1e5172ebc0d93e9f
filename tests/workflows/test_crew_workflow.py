"""CrewWorkflow against a real Temporal dev server, CrewAI, and a real HTTP LLM stub."""

from __future__ import annotations

import asyncio
import time

import pytest

from kasal.client import ExecutionHandle, start_execution
from kasal.exceptions import ExecutionCancelledError, ExecutionFailedError, InvalidSpecError
from kasal.execution import EventType, ExecutionState, TaskState
from tests.fixtures.llm_stub import ModelBehaviour
from tests.helpers import FAST_RETRY, crew, offline_agent, stub_agent


async def start(client, task_queue, spec, inputs=None) -> ExecutionHandle:
    return await start_execution(client, spec, inputs, task_queue=task_queue)


async def collect(handle: ExecutionHandle, from_offset: int = 0):
    return [e async for e in handle.events(from_offset)]


async def test_context_passes_between_tasks_over_the_openai_path(
    temporal_client, task_queue, worker, llm_stub
):
    spec = crew(
        [
            {"name": "gather", "description": "Gather facts about {topic}"},
            {"name": "draft", "description": "Draft a note"},  # sees gather (the one before)
            {"name": "check", "description": "Check the facts", "context": ["gather"]},
        ],
        agents=[stub_agent("writer", llm_stub.base_url)],
    )
    handle = await start(temporal_client, task_queue, spec, {"topic": "tea"})
    result = await handle.result()

    requests = llm_stub.requests_for("writer")
    assert len(requests) == 3
    gather, draft, check = requests
    assert "Gather facts about tea" in gather.prompt
    gather_out = result.tasks[0].raw
    draft_out = result.tasks[1].raw
    assert gather_out == llm_stub.answer_for("writer", gather.prompt)
    assert gather_out in draft.prompt
    assert gather_out in check.prompt and draft_out not in check.prompt
    assert result.output == result.tasks[2].raw
    assert result.token_usage.requests == 3 and result.token_usage.total_tokens > 0


async def test_async_tasks_run_in_parallel(temporal_client, task_queue, worker):
    slow = offline_agent("offline/slow", latency_ms=1500)
    spec = crew(
        [
            {"name": "a", "description": "Part A", "async_execution": True},
            {"name": "b", "description": "Part B", "async_execution": True},  # default context
            {"name": "join", "description": "Join"},  # sees a and b
        ],
        agents=[slow],
    )
    handle = await start(temporal_client, task_queue, spec)
    result = await handle.result()
    status = await handle.status()
    a, b, join = status.tasks
    elapsed = (join.ended_at - min(a.started_at, b.started_at)).total_seconds()
    # a and b overlap in time; join starts only after both ended.
    assert a.started_at < b.ended_at and b.started_at < a.ended_at
    assert join.started_at >= max(a.ended_at, b.ended_at)
    assert elapsed < 3 * 1.5 + 1.0, f"three 1.5 s tasks took {elapsed:.1f}s: not parallel"
    assert [t.name for t in result.tasks] == ["a", "b", "join"]


@pytest.mark.parametrize(
    ("kind", "text"),
    [("unavailable", "503"), ("rate_limit", "rate limit"), ("timeout", "timed out")],
)
async def test_retryable_failures_are_retried_and_reported(
    temporal_client, task_queue, worker, kind, text
):
    flaky = offline_agent("offline/flaky", fail_first=2, fail_with=kind)
    spec = crew([{"name": "t", "description": "Do it", "retry": FAST_RETRY}], agents=[flaky])
    handle = await start(temporal_client, task_queue, spec)
    result = await handle.result()
    events = await collect(handle)
    retrying = [e for e in events if e.type == EventType.TASK_RETRYING]
    assert [e.attempt for e in retrying] == [1, 2]
    assert text in retrying[0].data["error"]
    assert retrying[0].data["next_attempt"] == 2
    assert result.tasks[0].attempts == 3
    status = await handle.status()
    assert status.tasks[0].attempts == 3 and status.tasks[0].state == TaskState.COMPLETED


async def test_provider_5xx_over_http_is_retried(temporal_client, task_queue, worker, llm_stub):
    llm_stub.behaviours["flaky"] = ModelBehaviour(fail_first=2, fail_status=502)
    spec = crew(
        [{"name": "t", "description": "Do it", "retry": FAST_RETRY}],
        agents=[stub_agent("flaky", llm_stub.base_url)],
    )
    result = await (await start(temporal_client, task_queue, spec)).result()
    assert result.tasks[0].attempts == 3
    assert [r.status for r in llm_stub.requests_for("flaky", None)] == [502, 502, 200]


@pytest.mark.parametrize(
    ("agent_llm", "message"),
    [
        ({"model": "offline/x", "options": {"fail_with": "auth"}}, "invalid API key"),
        ({"model": "nosuch/model"}, "unknown LLM provider"),
    ],
)
async def test_non_retryable_errors_fail_fast(
    temporal_client, task_queue, worker, agent_llm, message
):
    agent = {"name": "analyst", "role": "Analyst", "goal": "g", "llm": agent_llm}
    if agent_llm["model"].startswith("offline"):
        agent["llm"]["options"]["fail_first"] = 5
    spec = crew(
        [{"name": "t", "description": "Do it", "retry": {"maximum_attempts": 5}}], agents=[agent]
    )
    started = time.monotonic()
    handle = await start(temporal_client, task_queue, spec)
    with pytest.raises((ExecutionFailedError, InvalidSpecError)) as info:
        await handle.result()
    assert message in str(info.value)
    assert time.monotonic() - started < 10
    status = await handle.status()
    assert status.state == ExecutionState.FAILED
    assert status.tasks[0].attempts == 1 and status.tasks[0].state == TaskState.FAILED
    events = await collect(handle)
    assert not [e for e in events if e.type == EventType.TASK_RETRYING]
    assert events[-1].type == EventType.EXECUTION_FAILED


async def test_provider_auth_failure_over_http_is_not_retried(
    temporal_client, task_queue, worker, llm_stub, monkeypatch
):
    monkeypatch.setenv("KASAL_LLM_KEY_STUB", "bad-key")
    spec = crew(
        [{"name": "t", "description": "Do it", "retry": {"maximum_attempts": 5}}],
        agents=[stub_agent("locked", llm_stub.base_url, api_key_env="KASAL_LLM_KEY_STUB")],
    )
    handle = await start(temporal_client, task_queue, spec)
    with pytest.raises(ExecutionFailedError, match="credentials"):
        await handle.result()
    assert len(llm_stub.requests_for("locked", None)) == 1


async def test_unknown_tool_is_a_spec_error(temporal_client, task_queue, worker):
    agent = {"name": "analyst", "role": "Analyst", "goal": "g", "tools": ["no_such_tool"]}
    spec = crew([{"name": "t", "description": "Do it"}], agents=[agent])
    handle = await start(temporal_client, task_queue, spec)
    with pytest.raises(InvalidSpecError, match="unknown tool"):
        await handle.result()


async def test_missing_input_is_refused_before_start(temporal_client, task_queue):
    spec = crew([{"name": "t", "description": "About {product}"}])
    with pytest.raises(InvalidSpecError, match="product"):
        await start(temporal_client, task_queue, spec, {})


async def test_task_timeout(temporal_client, task_queue, worker):
    slow = offline_agent("offline/slow", latency_ms=5000)
    spec = crew(
        [
            {
                "name": "t",
                "description": "Too slow",
                "timeout": {"start_to_close": 1, "heartbeat": 5},
                "retry": {"maximum_attempts": 2, "initial_interval": 0.1},
            }
        ],
        agents=[slow],
    )
    started = time.monotonic()
    handle = await start(temporal_client, task_queue, spec)
    with pytest.raises(ExecutionFailedError, match="(?i)timeout|timed out"):
        await handle.result()
    assert time.monotonic() - started < 8
    status = await handle.status()
    assert status.tasks[0].state == TaskState.FAILED
    assert status.tasks[0].attempts == 2


async def test_cancellation_stops_the_running_task(temporal_client, task_queue, worker):
    slow = offline_agent("offline/slow", latency_ms=60_000)
    spec = crew(
        [{"name": "first", "description": "Long"}, {"name": "second", "description": "Never"}],
        agents=[slow],
        timeout={"start_to_close": 300, "heartbeat": 3},
    )
    handle = await start(temporal_client, task_queue, spec)
    async for event in handle.events():
        if event.type == EventType.TASK_STARTED:
            break
    await asyncio.sleep(0.5)
    asked = time.monotonic()
    await handle.cancel()
    with pytest.raises(ExecutionCancelledError):
        await handle.result()
    assert time.monotonic() - asked < 8, "a 60 s LLM call should stop within a heartbeat"
    await handle.cancel()  # idempotent
    status = await handle.status()
    assert status.state == ExecutionState.CANCELLED
    assert [t.state for t in status.tasks] == [TaskState.CANCELLED, TaskState.CANCELLED]
    events = await collect(handle)
    assert events[-1].type == EventType.EXECUTION_CANCELLED
    assert not [e for e in events if e.task == "second"]


async def test_events_are_ordered_with_offsets_and_resumable(temporal_client, task_queue, worker):
    calculate = {"tool": "calculator", "input": {"expression": "6 * 7"}}
    tooled = offline_agent("offline/t", ["calculator"], script=[calculate])
    spec = crew(
        [{"name": "one", "description": "First"}, {"name": "two", "description": "Second"}],
        agents=[tooled],
    )
    handle = await start(temporal_client, task_queue, spec)
    live = await collect(handle)
    await handle.result()
    assert [e.offset for e in live] == list(range(len(live)))
    assert [e.type for e in live] == [
        EventType.EXECUTION_STARTED,
        EventType.TASK_STARTED,
        EventType.LLM_CALL,
        EventType.TOOL_CALL,
        EventType.LLM_CALL,
        EventType.TASK_COMPLETED,
        EventType.TASK_STARTED,
        EventType.LLM_CALL,
        EventType.TOOL_CALL,
        EventType.LLM_CALL,
        EventType.TASK_COMPLETED,
        EventType.EXECUTION_COMPLETED,
    ]
    tool = live[3]
    assert tool.data["tool"] == "calculator" and tool.data["output"] == "42"
    assert live[2].data["model"] == "offline/t" and live[2].data["prompt_tokens"] > 0
    # A late subscriber starting at an offset sees exactly the tail, as does the trace query.
    tail = await collect(handle, from_offset=5)
    assert [(e.offset, e.event_id) for e in tail] == [(e.offset, e.event_id) for e in live[5:]]
    trace = await handle.trace(from_offset=3, limit=4)
    assert [e.event_id for e in trace] == [e.event_id for e in live[3:7]]
    # Task state comes from those events too.
    status = await handle.status()
    assert status.event_count == len(live)
    assert status.token_usage.requests == 4


async def test_starting_twice_with_one_execution_id_is_idempotent(
    temporal_client, task_queue, worker
):
    spec = crew([{"name": "t", "description": "Once"}])
    first = await start_execution(
        temporal_client, spec, task_queue=task_queue, execution_id="same-id-1"
    )
    again = await start_execution(
        temporal_client, spec, task_queue=task_queue, execution_id="same-id-1"
    )
    assert first.workflow_id == again.workflow_id == "kasal-exec-same-id-1"
    await first.result()
    events = await collect(again)
    assert sum(e.type == EventType.EXECUTION_STARTED for e in events) == 1


async def _first_call(llm_stub, model: str) -> None:
    """Wait until the stub has seen a call for ``model``: the task is in the middle of it."""
    for _ in range(200):
        if llm_stub.requests_for(model, None):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no call for {model!r} reached the stub in 10 s")


async def _cancelled_in(handle) -> float:
    """Cancel the execution; the seconds until it has ended cancelled."""
    asked = time.monotonic()
    await handle.cancel()
    with pytest.raises(ExecutionCancelledError):
        await handle.result()
    return time.monotonic() - asked


async def test_cancel_with_default_heartbeat_stops_before_the_next_task(
    heartbeat_cancel_client, task_queue, settings, llm_stub
):
    """A cancel must not be lost when the running task finishes before it hears of it,
    and must reach an LLM call on the real HTTP path within seconds."""
    from tests.fixtures.temporal import running_worker

    # Cancels ride on heartbeats here (a server that does not push them): each call (0.4 s)
    # is shorter than a heartbeat round, so the task usually finishes before the
    # cancellation reaches it, and the workflow itself must then stop.
    temporal_client = heartbeat_cancel_client
    llm_stub.behaviours["paced"] = ModelBehaviour(latency=0.4)
    spec = crew(
        [{"name": f"t{n}", "description": f"Part {n}"} for n in range(1, 4)],
        agents=[{**stub_agent("paced", llm_stub.base_url), "tools": []}],
    )  # default timeouts: heartbeat 10 s
    async with running_worker(temporal_client, task_queue, settings):
        handle = await start(temporal_client, task_queue, spec)
        await _first_call(llm_stub, "paced")
        assert await _cancelled_in(handle) < 5
        await asyncio.sleep(1.5)  # anything still running would reach the stub by now
        assert len(llm_stub.requests_for("paced", None)) == 1
        status = await handle.status()
        assert [t.state for t in status.tasks] == [TaskState.CANCELLED] * 3


async def test_a_pushed_cancel_stops_a_task_that_sent_no_heartbeat(
    temporal_client, task_queue, worker, llm_stub
):
    """The server pushes the cancel to the worker (worker commands): a task whose heartbeat
    timeout is 30 s (a beat every 10 s, the first 10 s in) stops mid-call within a second or
    two, without a heartbeat having reached the server."""
    llm_stub.behaviours["pushed"] = ModelBehaviour(latency=30.0)
    spec = crew(
        [{"name": "slow", "description": "Think hard"}, {"name": "next", "description": "Never"}],
        agents=[{**stub_agent("pushed", llm_stub.base_url), "tools": []}],
        timeout={"start_to_close": 300, "heartbeat": 30},
    )
    handle = await start(temporal_client, task_queue, spec)
    await _first_call(llm_stub, "pushed")
    await asyncio.sleep(1.0)  # past the 0.5 s a heartbeat-carried cancel would beat at
    described = await temporal_client.get_workflow_handle(handle.workflow_id).describe()
    (pending,) = described.raw_description.pending_activities
    assert not pending.HasField("last_heartbeat_time"), "the task heartbeat before 10 s"
    assert await _cancelled_in(handle) < 2.0, "the cancel waited for a heartbeat"
    status = await handle.status()
    assert [t.state for t in status.tasks] == [TaskState.CANCELLED] * 2
    assert len(llm_stub.requests_for("pushed", None)) == 1


async def test_search_attributes_and_memo_let_the_web_ui_filter(
    temporal_client, task_queue, worker
):
    name = f"sa-crew-{time.time_ns()}"
    spec = crew([{"name": "t", "description": "Once"}], name=name)
    handle = await start_execution(
        temporal_client, spec, task_queue=task_queue, crew_id="crew-42", owner="user-7"
    )
    await handle.result()
    query = (
        f'KasalCrewName = "{name}" AND KasalStatus = "completed" '
        'AND KasalCrewId = "crew-42" AND KasalOwner = "user-7"'
    )
    found = []
    for _ in range(50):  # visibility is eventually consistent
        found = [w async for w in temporal_client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)
    assert [w.id for w in found] == [handle.workflow_id]
    memo = await found[0].memo()
    assert memo["crew_name"] == name and memo["status"] == "completed"


async def test_cancel_abandons_an_http_llm_call_in_flight(
    temporal_client, task_queue, worker, llm_stub
):
    """A cancel does not wait for a slow provider: the task stops at once, mid-request."""
    llm_stub.behaviours["glacial"] = ModelBehaviour(latency=15.0)
    spec = crew(
        [{"name": "slow", "description": "Think hard"}, {"name": "next", "description": "Never"}],
        agents=[{**stub_agent("glacial", llm_stub.base_url), "tools": []}],
    )
    handle = await start(temporal_client, task_queue, spec)
    await _first_call(llm_stub, "glacial")
    # At once, as the README says (measured 0.3-0.6 s here before cancels were pushed;
    # bound kept for load).
    assert await _cancelled_in(handle) < 2.0, "waited for the 15 s provider call"
    status = await handle.status()
    assert [t.state for t in status.tasks] == [TaskState.CANCELLED] * 2
    assert len(llm_stub.requests_for("glacial", None)) == 1


async def test_custom_tools_register_by_name_from_configured_modules(temporal_client, settings):
    from tests.fixtures.temporal import running_worker

    count = {"tool": "word_count", "input": {"text": "one two three"}}
    agent = offline_agent("offline/t", ["word_count"], script=[count])
    spec = crew([{"name": "count", "description": "Count"}], agents=[agent])
    tooled = settings.model_copy(update={"tool_modules": ["tests.fixtures.custom_tools"]})
    async with running_worker(temporal_client, settings.task_queue, tooled):
        handle = await start(temporal_client, settings.task_queue, spec)
        await handle.result()
        events = await collect(handle)
    (tool,) = [e for e in events if e.type == EventType.TOOL_CALL]
    assert tool.data["tool"] == "word_count" and tool.data["output"] == "3"


@pytest.mark.parametrize(
    ("model", "env"),
    [
        ("databricks/serving-a", {"DATABRICKS_HOST": "{root}", "DATABRICKS_TOKEN": "dapi-test"}),
        ("ollama/llama3", {"OLLAMA_HOST": "{root}"}),
        ("openai/gpt-test", {"OPENAI_BASE_URL": "{root}/v1", "OPENAI_API_KEY": "sk-test"}),
    ],
)
async def test_providers_configured_by_environment_reach_their_endpoint(
    temporal_client, task_queue, worker, llm_stub, monkeypatch, model, env
):
    root = llm_stub.base_url.removesuffix("/v1")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(root=root))
    agent = {"name": "analyst", "role": "Analyst", "goal": "g", "model": model}
    spec = crew([{"name": "t", "description": "Say hi"}], agents=[agent])
    result = await (await start(temporal_client, task_queue, spec)).result()
    name = model.split("/", 1)[1]
    (request,) = llm_stub.requests_for(name)
    assert result.output == llm_stub.answer_for(name, request.prompt)


async def test_trace_needs_no_argument_and_summaries_are_one_line(
    temporal_client, task_queue, worker
):
    """`temporal workflow query --type trace` sends no argument; a role written with YAML's
    ``>`` ends in a newline, which must not reach the Web UI's one-line summaries."""
    from temporalio.api.enums.v1 import EventType as HistoryEventType
    from temporalio.contrib.pydantic import pydantic_data_converter

    analyst = {"name": "analyst", "role": "Senior\nAnalyst\n", "goal": "g", "llm": "offline/a"}
    handle = await start(
        temporal_client, task_queue, crew([{"name": "t", "description": "Once"}], [analyst])
    )
    await handle.result()
    raw = temporal_client.get_workflow_handle(handle.workflow_id)
    trace = await raw.query("trace")
    assert [e["type"] for e in trace][:2] == ["execution_started", "task_started"]
    history = await raw.fetch_history()
    summaries = [
        pydantic_data_converter.payload_converter.from_payload(e.user_metadata.summary, str)
        for e in history.events
        if e.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.user_metadata.HasField("summary")
    ]
    assert "Senior Analyst: t" in summaries
    assert not [s for s in summaries if "\n" in s]


async def test_the_record_is_a_local_activity_given_the_trace(
    temporal_client, task_queue, worker, settings
):
    """Recording a finished execution costs the server no activity task, no workflow task of
    its own and no trace query: a local activity is given the trace, which the database then
    holds in full, in order."""
    from temporalio.api.enums.v1 import EventType as HistoryEventType

    from kasal.db.engine import create_engine, session_factory
    from kasal.db.repositories import TraceRepository

    handle = await start(
        temporal_client,
        task_queue,
        crew([{"name": "a", "description": "A"}, {"name": "b", "description": "B"}]),
    )
    await handle.result()
    raw = temporal_client.get_workflow_handle(handle.workflow_id)
    live = await raw.query("trace")
    history = await raw.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["run_task", "run_task"]
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == HistoryEventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert "core_local_activity" in markers
    engine = create_engine(settings.resolved_database_url())
    try:
        async with session_factory(engine)() as session:
            stored = await TraceRepository(session).page(handle.id, offset=0, limit=1000)
    finally:
        await engine.dispose()
    assert [e.event_id for e in stored] == [e["event_id"] for e in live]
    assert stored[-1].type == EventType.EXECUTION_COMPLETED
