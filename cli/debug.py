"""Replay and debugging commands: ``kasal replay``, ``kasal history export``,
``kasal replay-history``. Registered on :data:`cli.main.app` when it is imported."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.main import (
    EXIT_FAILED,
    _fail,
    _follow,
    _parse_inputs,
    app,
    err,
    out,
)
from kasal.exceptions import KasalError, TemporalUnavailableError
from kasal.settings import get_settings

history_app = typer.Typer(help="Workflow histories of executions.", no_args_is_help=True)
app.add_typer(history_app, name="history")


@app.command()
def replay(
    execution: Annotated[str, typer.Argument(help="Execution id to re-run from a task.")],
    from_task: Annotated[
        str, typer.Option("--from-task", "-t", help="The first task to run again.")
    ],
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="key=value, overrides the original's input."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    detach: Annotated[
        bool, typer.Option(help="Start and print the execution id; do not wait.")
    ] = False,
) -> None:
    """Re-run an execution from a task as a NEW execution linked to it.

    Every task before --from-task keeps the original's output (no LLM or tool call); that
    task and every later one run again, with --input values overriding the original's.
    The original execution stays as it was.
    """
    try:
        values = _parse_inputs(inputs or [])
        code = asyncio.run(_replay(execution, from_task, values, as_json, detach))
    except KasalError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


async def _replay(
    execution: str, from_task: str, inputs: dict[str, object], as_json: bool, detach: bool
) -> int:
    from kasal.client import Runtime
    from kasal.replay import source_from_temporal, start_replay

    settings = get_settings()
    show = err if as_json else out
    async with Runtime(settings, in_process_worker=settings.embedded and not detach) as rt:
        if detach and rt.server is not None and not rt.adopted_server:
            raise TemporalUnavailableError(
                "--detach needs a Temporal that outlives this command: run `kasal dev` "
                "in another terminal, or set KASAL_TEMPORAL_ADDRESS"
            )
        client = await rt.start()
        source = await source_from_temporal(client, execution)
        handle = await start_replay(
            client,
            source,
            from_task,
            inputs,
            task_queue=rt.task_queue,
            search_attributes=rt.search_attributes,
            owner=settings.owner or source.owner,
            offline_fallback=False,  # the original's spec already says which model runs
        )
        kept = [t.name for t in source.spec.tasks][
            : [t.name for t in source.spec.tasks].index(from_task)
        ]
        show.print(
            f"replay of [bold]{execution}[/] from task [cyan]{from_task}[/]: "
            f"{len(kept)} task(s) keep their outputs ({', '.join(kept) or 'none'})",
            highlight=False,
        )
        return await _follow(handle, source.spec, show, as_json=as_json, detach=detach)


@history_app.command("export")
def history_export(
    execution: Annotated[str, typer.Argument(help="Execution id.")],
    run_id: Annotated[
        str | None, typer.Option(help="A run of the execution (default: the latest).")
    ] = None,
) -> None:
    """Print an execution's workflow history as JSON (Temporal's format) on stdout."""
    try:
        text = asyncio.run(_export(execution, run_id))
    except KasalError as exc:
        raise _fail(exc) from None
    sys.stdout.write(text + "\n")


async def _export(execution: str, run_id: str | None) -> str:
    from kasal.client import Runtime
    from kasal.constants import workflow_id_for

    async with Runtime(get_settings(), in_process_worker=False) as rt:
        client = await rt.start()
        handle = client.get_workflow_handle(workflow_id_for(execution), run_id=run_id)
        try:
            history = await handle.fetch_history()
        except Exception as exc:
            raise TemporalUnavailableError(
                f"no history for execution {execution}: {str(exc).splitlines()[0]}"
            ) from exc
        return history.to_json()


@app.command("replay-history")
def replay_history(
    history_file: Annotated[Path, typer.Argument(help="A history exported as JSON.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Replay a recorded history with this checkout's workflow code (Temporal's Replayer).

    Exit 0 if compatible; 1 if not, naming the first diverging command and its task.
    """
    from workflows.replay_check import load_history
    from workflows.replay_check import replay_history as check

    verdict = asyncio.run(check(load_history(history_file), quiet=True))
    if as_json:
        print(json.dumps(verdict.__dict__, indent=2))
    elif verdict.compatible:
        out.print(f"[green]{verdict.describe()}[/]", highlight=False)
    else:
        err.print(f"[bold red]{verdict.describe()}[/]", highlight=False, markup=False)
    raise typer.Exit(0 if verdict.compatible else EXIT_FAILED)
