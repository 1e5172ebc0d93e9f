"""Operating crews from the command line: ``kasal feedback``, ``kasal schedule ...``, and the
terminal prompt ``kasal run`` shows when a task waits for a person.

These talk to Temporal directly (``KASAL_TEMPORAL_ADDRESS``, or the embedded server of a
``kasal dev`` running elsewhere), as ``kasal run`` does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kasal.exceptions import ConflictError, KasalError
from kasal.execution import Event, WaitingTask
from kasal.settings import get_settings

out = Console()
err = Console(stderr=True)

schedule_app = typer.Typer(
    name="schedule", help="Crews on a timetable (Temporal Schedules).", no_args_is_help=True
)


def _fail(exc: KasalError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    return typer.Exit(2 if not isinstance(exc, ConflictError) else 1)


async def _client() -> Any:
    from kasal.client import Runtime

    runtime = Runtime(get_settings(), in_process_worker=False)
    return runtime, await runtime.start()


# -- human input ---------------------------------------------------------------------------


def terminal_reader(show: Console) -> Callable[[str], str]:
    """Read a line from stdin, prompting on ``show`` (stdout may hold ``--json`` output)."""

    def read(prompt: str) -> str:
        show.print(prompt, end="", highlight=False)
        line = sys.stdin.readline()
        if not line:  # stdin closed: nobody will answer here
            raise EOFError("no answer on stdin")
        return line

    return read


def ask(task: WaitingTask, read: Callable[[str], str], show: Console) -> tuple[bool, str | None]:
    """Show a waiting task's output and read a verdict: Enter (or y) approves, anything
    else is feedback to redo the task with."""
    show.rule(f"{task.task} ({task.agent}) waits for your review")
    show.print(task.output, highlight=False, markup=False)
    show.rule()
    answer = read("Enter to approve, or type what to change: ").strip()
    if answer.lower() in ("", "y", "yes", "approve", "ok"):
        return True, None
    return False, answer


async def answer_prompt(
    handle: Any, event: Event, show: Console, read: Callable[[str], str]
) -> None:
    """``kasal run``: a task asked for human input; ask in the terminal and answer it."""
    task = WaitingTask(
        task=event.task or "",
        agent=event.agent or "",
        output=str(event.data.get("output", "")),
        since=event.timestamp,
        timeout_seconds=event.data.get("timeout_seconds"),
    )
    try:
        approve, feedback = await asyncio.to_thread(ask, task, read, show)
    except EOFError:
        show.print("[yellow]stdin closed: answer with `kasal feedback` or the API[/]")
        return
    try:
        result = await handle.feedback(approve=approve, feedback=feedback, task=task.task)
    except ConflictError as exc:  # answered elsewhere meanwhile, or timed out
        show.print(f"[yellow]not sent: {exc.message}[/]", highlight=False)
        return
    show.print("[green]approved[/]" if result.approved else "[cyan]sent: the task runs again[/]")


def feedback(
    execution_id: Annotated[str, typer.Argument(help="The execution id.")],
    approve: Annotated[bool, typer.Option("--approve", help="Approve the output.")] = False,
    text: Annotated[
        str | None, typer.Option("--feedback", help="What to change; the task runs again.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Which waiting task (default: the one).")] = None,
) -> None:
    """Answer a task waiting for human input; with neither option, show it and ask."""
    if approve and text:
        err.print("[bold red]error:[/] give --approve or --feedback, not both")
        raise typer.Exit(2)
    try:
        code = asyncio.run(_feedback(execution_id, approve, text, task))
    except KasalError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


async def _feedback(execution_id: str, approve: bool, text: str | None, task: str | None) -> int:
    from kasal.client import ExecutionHandle
    from kasal.constants import WAITING_QUERY

    runtime, client = await _client()
    try:
        handle = ExecutionHandle(client, execution_id)
        if not approve and not text:
            waiting = await handle._handle.query(WAITING_QUERY, result_type=list[WaitingTask])
            waiting = [w for w in waiting if task is None or w.task == task]
            if not waiting:
                err.print(f"execution {execution_id}: no task waits for input")
                return 1
            approve, text = await asyncio.to_thread(ask, waiting[0], terminal_reader(err), out)
            task = waiting[0].task
        result = await handle.feedback(approve=approve, feedback=text, task=task)
    finally:
        await runtime.stop()
    verdict = "approved" if result.approved else "sent feedback; it runs again"
    out.print(f"{result.task}: {verdict}", highlight=False)
    return 0


# -- schedules -----------------------------------------------------------------------------


@schedule_app.command("create")
def schedule_create(
    spec_file: Annotated[Path, typer.Argument(help="Crew spec, YAML or JSON.")],
    every: Annotated[
        list[float] | None, typer.Option("--every", help="Interval in seconds (repeatable).")
    ] = None,
    cron: Annotated[list[str] | None, typer.Option(help="Cron expression (repeatable).")] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="key=value")] = None,
    time_zone: Annotated[str | None, typer.Option("--time-zone")] = None,
    overlap: Annotated[str, typer.Option(help="skip, buffer_one, allow_all, ...")] = "skip",
    jitter: Annotated[float, typer.Option(help="Seconds of random delay.")] = 0,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
) -> None:
    """Run a crew on a timetable; prints the schedule id."""
    from kasal.schedules import Timetable
    from kasal.spec import CrewSpec

    try:
        spec = CrewSpec.from_file(spec_file)
        values = dict(pair.split("=", 1) for pair in inputs or [])
        spec.interpolated(values)
        timetable = Timetable(
            cron=cron or [],
            interval_seconds=every or [],
            time_zone=time_zone,
            overlap=overlap,  # type: ignore[arg-type]
            jitter_seconds=jitter,
            paused=paused,
        )
        schedule_id = asyncio.run(_schedule_create(spec, values, timetable))
    except KasalError as exc:
        raise _fail(exc) from None
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    print(schedule_id)


async def _schedule_create(spec: Any, values: dict[str, Any], timetable: Any) -> str:
    from kasal.schedules import create_schedule

    runtime, client = await _client()
    try:
        schedule_id = uuid.uuid4().hex
        await create_schedule(
            client,
            schedule_id,
            timetable,
            {
                "schedule_id": schedule_id,
                "spec": spec.model_dump(mode="json"),
                "inputs": values,
                "owner": runtime.settings.owner or None,
                "search_attributes": runtime.search_attributes,
            },
            task_queue=runtime.settings.task_queue,
            memo={"owner": runtime.settings.owner, "name": spec.name},
        )
        return schedule_id
    finally:
        await runtime.stop()


async def _on_schedule(action: Callable[[Any], Any]) -> Any:
    runtime, client = await _client()
    try:
        return await action(client)
    finally:
        await runtime.stop()


def _run_action(action: Callable[[Any], Any]) -> Any:
    try:
        return asyncio.run(_on_schedule(action))
    except KasalError as exc:
        raise _fail(exc) from None


@schedule_app.command("list")
def schedule_list() -> None:
    """Every Kasal schedule on the server, one per line."""
    from kasal.constants import SCHEDULE_ID_PREFIX

    async def listing(client: Any) -> list[str]:
        found = []
        async for entry in await client.list_schedules():
            if entry.id.startswith(SCHEDULE_ID_PREFIX):
                found.append(entry.id.removeprefix(SCHEDULE_ID_PREFIX))
        return found

    for schedule_id in _run_action(listing):
        print(schedule_id)


@schedule_app.command("show")
def schedule_show(schedule_id: str) -> None:
    """Timetable, paused or not, next and recent runs (JSON)."""
    from kasal.schedules import describe_schedule

    view = _run_action(lambda client: describe_schedule(client, schedule_id))
    print(json.dumps(view.model_dump(mode="json"), indent=2))


@schedule_app.command("pause")
def schedule_pause(schedule_id: str) -> None:
    """No new runs until unpaused."""
    from kasal.schedules import pause_schedule

    _run_action(lambda client: pause_schedule(client, schedule_id, "paused from the CLI"))


@schedule_app.command("unpause")
def schedule_unpause(schedule_id: str) -> None:
    """Runs resume when next due."""
    from kasal.schedules import unpause_schedule

    _run_action(lambda client: unpause_schedule(client, schedule_id, "unpaused from the CLI"))


@schedule_app.command("trigger")
def schedule_trigger(schedule_id: str) -> None:
    """One run now."""
    from kasal.schedules import trigger_schedule

    _run_action(lambda client: trigger_schedule(client, schedule_id))


@schedule_app.command("backfill")
def schedule_backfill(
    schedule_id: str,
    start: Annotated[datetime, typer.Option(help="Range start (ISO 8601).")],
    end: Annotated[datetime, typer.Option(help="Range end (ISO 8601).")],
) -> None:
    """The runs the timetable would have made in a past range, now."""
    from kasal.schedules import backfill_schedule

    _run_action(lambda client: backfill_schedule(client, schedule_id, start, end))


@schedule_app.command("delete")
def schedule_delete(schedule_id: str) -> None:
    """No more runs (runs already started go on)."""
    from kasal.schedules import delete_schedule

    _run_action(lambda client: delete_schedule(client, schedule_id))
