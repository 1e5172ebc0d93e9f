"""Tool effects survive crashes: a finished tool call is journaled and never run again."""

from __future__ import annotations

import sys

from kasal.execution import EventType
from tests.fixtures.llm_stub import ModelBehaviour
from tests.fixtures.worker_process import crash_mid_call_and_resume
from tests.helpers import crew, stub_agent


async def test_killed_after_code_execution_does_not_run_the_code_again(
    temporal_server, temporal_client, task_queue, llm_stub, tmp_path
):
    # The interpreter the sandbox starts counts its runs: one line per execution (the
    # isolation probe each worker makes at start is not one).
    runs = tmp_path / "runs.log"
    python = tmp_path / "counting-python"
    python.write_text(
        "#!/bin/sh\n"
        f"""case "$*" in *'"probe": true'*) ;; *) echo run >> "{runs}" ;; esac\n"""
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    # Call 1 asks for code_execution; call 2 (after the code ran) hangs until the kill.
    llm_stub.behaviours["coder"] = ModelBehaviour(
        steps=[("code_execution", {"code": "print(6 * 7)"})], block_at=2
    )
    agent = stub_agent("coder", llm_stub.base_url)
    agent["tools"] = ["code_execution"]
    spec = crew(
        [{"name": "compute", "description": "Compute six times seven with Python"}],
        agents=[agent],
        timeout={"start_to_close": 120, "heartbeat": 2},
    )
    result, events = await crash_mid_call_and_resume(
        temporal_server.address,
        temporal_client,
        task_queue,
        spec,
        llm_stub,
        tmp_path,
        KASAL_CODE_EXECUTION_PYTHON=str(python),
    )

    assert runs.read_text().count("run") == 1, "the retried attempt ran the code again"
    requests = llm_stub.requests_for("coder")
    assert len(requests) == 3, "call 1, call 2 (killed), call 2 again; call 1 replayed"
    assert "42" in requests[-1].prompt, "the replayed result reached the next prompt"
    assert result.tasks[0].attempts == 2
    # (The first attempt's tool event went down with its worker: events ride on the next
    # LLM call's signal. The journal, not the events, is what durability rests on.)
    retried = [e for e in events if e.type == EventType.TOOL_CALL and e.attempt == 2]
    assert [e.data["replayed"] for e in retried] == [True]
    assert "42" in retried[0].data["output"]
