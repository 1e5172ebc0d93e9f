"""Long crews continue as new before history limits; the event stream spans every run."""

from __future__ import annotations

from kasal.client import start_execution
from kasal.execution import EventType
from tests.helpers import crew


async def test_a_300_task_crew_runs_to_the_end_across_runs(temporal_client, task_queue, worker):
    tasks = 300
    # Each step sees the one before (by default a task would see all 299 before it).
    spec = crew(
        [
            {"name": f"t{n}", "description": f"Step {n}", "context": [f"t{n - 1}"] if n else []}
            for n in range(tasks)
        ]
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue, tasks_per_run=120)
    events = [e async for e in handle.events(poll_cooldown=0.2)]
    result = await handle.result()

    assert [t.name for t in result.tasks] == [f"t{n}" for n in range(tasks)]
    assert "Step 299" in result.output
    assert [e.offset for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds.count(EventType.EXECUTION_STARTED) == 1
    assert kinds.count(EventType.EXECUTION_CONTINUED) == 2  # 300 tasks, 120 per run
    assert kinds.count(EventType.TASK_COMPLETED) == tasks
    assert kinds[-1] == EventType.EXECUTION_COMPLETED
    status = await handle.status()
    assert status.state == "completed" and all(t.state == "completed" for t in status.tasks)
    assert status.token_usage.requests == tasks
    history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
    first_event = history.events[0].workflow_execution_started_event_attributes
    assert first_event.continued_execution_run_id, "the last run continued an earlier one"
    assert len(history.events) < 2000
    # The trace query reads events carried across runs (from the stream state).
    trace = await handle.trace(from_offset=0, limit=5)
    assert [e.event_id for e in trace] == [e.event_id for e in events[:5]]


async def test_two_megabytes_of_outputs_stay_out_of_history(
    temporal_client, task_queue, worker, llm_stub, settings
):
    from kasal.blobs import BlobStore, resolve_result
    from kasal.db.engine import create_engine, session_factory
    from tests.fixtures.llm_stub import ModelBehaviour
    from tests.helpers import stub_agent

    llm_stub.behaviours["verbose"] = ModelBehaviour(answer_chars=700_000)
    spec = crew(
        [{"name": f"part{n}", "description": f"Write part {n} in full"} for n in range(1, 4)],
        agents=[{**stub_agent("verbose", llm_stub.base_url), "tools": []}],
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue)
    carried = await handle.result(resolve=False)
    assert all(t.ref and t.size == 700_000 and len(t.raw) < 10_000 for t in carried.tasks)

    engine = create_engine(settings.resolved_database_url(), pooled=False)
    try:
        full = await resolve_result(carried, BlobStore(session_factory(engine)))
    finally:
        await engine.dispose()
    assert [len(t.raw) for t in full.tasks] == [700_000] * 3
    assert full.output == full.tasks[-1].raw and full.output_ref is None
    # Each task saw the whole output before it (resolved from the blob, not the preview).
    requests = llm_stub.requests_for("verbose")
    assert full.tasks[0].raw in requests[1].prompt and full.tasks[1].raw in requests[2].prompt
    history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert history.events[-1].ByteSize() < 100_000
    assert sum(e.ByteSize() for e in history.events) < 500_000, "outputs leaked into history"


async def test_continue_as_new_moves_outputs_out_of_the_next_runs_input(
    temporal_client, task_queue, worker, llm_stub, settings
):
    from kasal.blobs import BlobStore, resolve_result
    from kasal.db.engine import create_engine, session_factory
    from tests.fixtures.llm_stub import ModelBehaviour
    from tests.helpers import stub_agent

    llm_stub.behaviours["wordy"] = ModelBehaviour(answer_chars=8_000)  # inline (< 16 kB)
    spec = crew(
        [{"name": f"t{n}", "description": f"Part {n}", "context": []} for n in range(6)],
        agents=[{**stub_agent("wordy", llm_stub.base_url), "tools": []}],
    )
    handle = await start_execution(temporal_client, spec, task_queue=task_queue, tasks_per_run=2)
    carried = await handle.result(resolve=False)
    history = await temporal_client.get_workflow_handle(handle.workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id
    assert started.input.ByteSize() < 20_000, "the next run's input carried whole outputs"
    engine = create_engine(settings.resolved_database_url(), pooled=False)
    try:
        full = await resolve_result(carried, BlobStore(session_factory(engine)))
    finally:
        await engine.dispose()
    answers = {r.answer.split("Final Answer: ", 1)[-1] for r in llm_stub.requests_for("wordy")}
    assert [t.raw in answers for t in full.tasks] == [True] * 6
