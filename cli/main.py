"""The ``kasal`` command: run a crew, run a worker, run the whole thing locally."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kasal.exceptions import (
    ExecutionCancelledError,
    ExecutionFailedError,
    InvalidSpecError,
    KasalError,
    TemporalUnavailableError,
)
from kasal.execution import Event, EventType
from kasal.settings import Settings, disable_crewai_telemetry, get_settings
from kasal.spec import CrewSpec

app = typer.Typer(
    name="kasal",
    help="Durable CrewAI crews on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

#: Exit codes: a failed crew, bad input, Temporal unreachable.
EXIT_FAILED, EXIT_INVALID, EXIT_UNAVAILABLE, EXIT_CANCELLED = 1, 2, 3, 4


def _register_operations() -> None:
    from cli.ops import feedback, schedule_app

    app.command()(feedback)
    app.add_typer(schedule_app)


def main() -> None:
    """Entry point of the ``kasal`` script.

    Leaves with ``os._exit`` once the command has finished and flushed: the Temporal
    client's native threads can outlive the event loop and abort the interpreter's teardown
    (``PyGILState_Release ... finalizing``, temporalio/sdk-python#300), turning a command
    that succeeded into a crash.
    """
    import logging

    disable_crewai_telemetry()
    try:
        app()  # standalone: it always ends in SystemExit with the command's exit code
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidSpecError(f"--input {pair!r} must look like key=value", field="inputs")
        inputs[key.strip()] = value
    return inputs


def _fail(exc: KasalError) -> typer.Exit:
    if isinstance(exc, InvalidSpecError) and isinstance(exc.details, list) and exc.details:
        err.print("[bold red]invalid crew spec:[/]")
        for problem in exc.details:
            err.print(f"  [red]{problem['field']}[/]: {problem['message']}", highlight=False)
        return typer.Exit(EXIT_INVALID)
    code = {
        InvalidSpecError: EXIT_INVALID,
        TemporalUnavailableError: EXIT_UNAVAILABLE,
        ExecutionCancelledError: EXIT_CANCELLED,
    }.get(type(exc), EXIT_INVALID if isinstance(exc, InvalidSpecError) else EXIT_FAILED)
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(code)


def _describe(event: Event, *, hierarchical: bool = False) -> str | None:
    """One line of the live view for ``event`` (None: not shown).

    Work lines (LLM and tool calls) name the agent that did them, which in a hierarchical
    crew is the coworker the manager delegated to, not the agent the task names.
    """
    data = event.data
    task = f"[cyan]{event.task}[/]" if event.task else ""
    who = f" [bold]{event.agent}[/]" if event.agent else ""
    match event.type:
        case EventType.EXECUTION_STARTED:
            return f"▶ crew [bold]{data.get('crew')}[/] started: {len(data.get('tasks', []))} tasks"
        case EventType.TASK_STARTED:
            extra = f" (attempt {event.attempt})" if (event.attempt or 1) > 1 else ""
            if hierarchical:
                return f"  … {task} started: the manager plans and delegates{extra}"
            return f"  … {task} started by {event.agent}{extra}"
        case EventType.DELEGATION:
            work = " ".join(str(data.get("work", "")).split())
            work = work if len(work) <= 100 else work[:99] + "…"
            return (
                f"  → {task} manager step {data.get('step')}: delegated to "
                f"[bold]{data.get('coworker') or event.agent}[/]: {work}"
            )
        case EventType.PLANNING_STARTED:
            return f"  … planning: one plan for {data.get('tasks')} tasks (CrewAI's planner)"
        case EventType.PLANNING_COMPLETED:
            return f"  [green]✓[/] planned: {', '.join(data.get('plans', {}))}"
        case EventType.EXECUTION_CONTINUED:
            return (
                f"  [dim]↪ continued as new (run {int(data.get('generation', 0)) + 1}, "
                f"{data.get('completed_tasks', 0)} tasks done): a fresh history, same execution[/]"
            )
        case EventType.LLM_CALL:
            tokens = int(data.get("prompt_tokens", 0)) + int(data.get("completion_tokens", 0))
            replay = " [dim](replayed from journal)[/]" if data.get("replayed") else ""
            return (
                f"    · {task}{who} LLM call {data.get('model')}: {tokens} tokens, "
                f"{data.get('latency_ms', 0):.0f} ms{replay}"
            )
        case EventType.TOOL_CALL:
            return f"    · {task}{who} tool {data.get('tool')}({json.dumps(data.get('input'))})"
        case EventType.TASK_RETRYING:
            return (
                f"  [yellow]↻ {task} attempt {event.attempt} failed: {data.get('error')}; "
                f"retrying in {data.get('retry_in_seconds')}s[/]"
            )
        case EventType.TASK_COMPLETED:
            return f"  [green]✓[/] {task} completed"
        case EventType.TASK_FAILED:
            return f"  [red]✗ {task} failed: {data.get('error')}[/]"
        case EventType.HUMAN_INPUT_REQUESTED:
            return f"  [magenta]? {task} waits for human input[/]"
        case EventType.EXECUTION_COMPLETED:
            usage = data.get("token_usage", {})
            return f"[green]■ completed[/] ({usage.get('total_tokens', 0)} tokens)"
        case EventType.EXECUTION_FAILED:
            return f"[red]■ failed:[/] {data.get('error')}"
        case EventType.EXECUTION_CANCELLED:
            return "[yellow]■ cancelled[/]"
        case EventType.TASK_REUSED:
            return f"  [green]✓[/] {task} reused from execution {data.get('from_execution')}"
        case EventType.EXECUTION_RESET:
            return f"  [yellow]↺ reset: run {data.get('run_id')} goes on from here[/]"
        case EventType.STOP_REQUESTED:
            by = f" by {data['by']}" if data.get("by") else ""
            return f"[yellow]■ stop requested{by}: the running task finishes, no new one starts[/]"
        case EventType.EXECUTION_STOPPED:
            skipped = ", ".join(data.get("not_started") or []) or "none"
            return f"[yellow]■ stopped[/] (not started: {skipped})"
    return None


def load_crew(paths: list[Path]) -> tuple[CrewSpec, dict[str, Any]]:
    """What ``kasal run`` / ``kasal validate`` are given, as a spec and its default inputs.

    A CrewAI project directory (``crewai create crew``'s layout) is imported and built by
    its own code; a spec file is read; an ``agents.yaml`` + ``tasks.yaml`` pair (or a
    directory holding them, in ``config/`` or not) is read as CrewAI writes them.
    """
    from kasal.project import is_project_dir, load_project

    if len(paths) == 1 and paths[0].is_dir() and is_project_dir(paths[0]):
        project = load_project(paths[0])
        return project.to_spec(), project.default_inputs()
    if len(paths) == 1 and paths[0].is_dir():
        base = paths[0] / "config" if (paths[0] / "config").is_dir() else paths[0]
        paths = [base / "agents.yaml", base / "tasks.yaml"]
    if len(paths) == 2:
        return _spec_from_pair(paths), {}
    if len(paths) != 1:
        raise InvalidSpecError(
            "give one crew spec file, a CrewAI project directory, or agents.yaml and tasks.yaml"
        )
    return CrewSpec.from_file(paths[0]), {}


def _spec_from_pair(paths: list[Path]) -> CrewSpec:
    import yaml

    by_name = {p.name.split(".")[0]: p for p in paths}
    if set(by_name) != {"agents", "tasks"}:
        raise InvalidSpecError("give agents.yaml and tasks.yaml", field="path")
    data: dict[str, Any] = {}
    for key, path in by_name.items():
        if not path.is_file():
            raise InvalidSpecError(f"no such file: {path}", field="path")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InvalidSpecError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InvalidSpecError(f"{path}: {key} must be a mapping keyed by name", field=key)
        data[key] = loaded
    root = paths[0].resolve().parent
    name = root.parent.name if root.name == "config" else root.name
    return CrewSpec.from_data({"name": name or "crew", **data})


@app.command()
def run(
    spec_file: Annotated[
        list[Path],
        typer.Argument(
            help="A CrewAI project directory, a crew spec (YAML or JSON), or agents.yaml "
            "and tasks.yaml."
        ),
    ],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="key=value, fills {key}.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    detach: Annotated[
        bool, typer.Option(help="Start and print the execution id; do not wait.")
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            help="Run every agent, manager and planner on the offline model (deterministic, "
            "no network); same as KASAL_OFFLINE=1."
        ),
    ] = False,
    prompt: Annotated[
        bool | None,
        typer.Option(
            "--prompt/--no-prompt",
            help="Ask in the terminal when a task waits for human input (default: when "
            "stdin is a terminal). Otherwise answer with `kasal feedback` or the API.",
        ),
    ] = None,
) -> None:
    """Run a crew end to end, showing live progress; print its output and execution id.

    Given a CrewAI project, the crew is built by the project's own code and inputs default
    to those of its ``main.py`` ``run()``.
    """
    try:
        if offline:
            os.environ["KASAL_OFFLINE"] = "true"
            get_settings.cache_clear()
        spec, defaults = load_crew(spec_file)
        values = _parse_inputs(inputs or []) or defaults
        spec.interpolated(values)  # a missing input is an error before anything starts
        asks = sys.stdin.isatty() if prompt is None else prompt
        if as_json:
            # stdout is the JSON document alone: what the crew's own code prints (CrewAI's
            # verbose panels, print() in tools) goes to stderr, as the live view does.
            result_out = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                code = asyncio.run(_run(spec, values, as_json, detach, result_out, asks))
        else:
            code = asyncio.run(_run(spec, values, as_json, detach, prompt=asks))
    except KasalError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


async def _run(
    spec: CrewSpec,
    inputs: dict[str, Any],
    as_json: bool,
    detach: bool,
    result_out: Any = None,
    prompt: bool = False,
) -> int:
    from kasal.client import Runtime
    from kasal.llm import with_offline_fallback

    settings = get_settings()
    show = err if as_json else out
    if offline_fallback_for(settings) and not settings.offline:
        spec, notes = with_offline_fallback(spec)
        if notes:
            show.print(
                "[yellow]no provider key configured: using the offline model (deterministic, "
                "no network) for[/]\n  " + "\n  ".join(notes),
                highlight=False,
            )
    if settings.offline:
        show.print(
            "[yellow]offline (asked for): every agent, manager and planner runs on the "
            "offline model (deterministic, no network)[/]",
            highlight=False,
        )
    offline = [a.name for a in spec.agents if a.llm.provider == "offline"]
    if offline and not settings.offline:
        show.print(f"[dim]offline model: {', '.join(offline)}[/]", highlight=False)
    async with Runtime(settings, in_process_worker=settings.embedded and not detach) as rt:
        if detach and rt.server is not None and not rt.adopted_server:
            raise TemporalUnavailableError(
                "--detach needs a Temporal that outlives this command: run `kasal dev` "
                "in another terminal, or set KASAL_TEMPORAL_ADDRESS"
            )
        for note in rt.describe():
            show.print(f"[dim]{note}[/]", highlight=False)
        if rt.server is not None and rt.server.ui_url:
            show.print(f"[dim]Temporal Web UI: {rt.server.ui_url}[/]")
        handle = await rt.start_execution(spec, inputs)
        return await _follow(
            handle,
            spec,
            show,
            as_json=as_json,
            detach=detach,
            result_out=result_out,
            prompt=prompt,
        )


async def _follow(
    handle: Any,
    spec: CrewSpec,
    show: Console,
    *,
    as_json: bool,
    detach: bool,
    result_out: Any = None,
    prompt: bool = False,
) -> int:
    """Show an execution's events live, then its result; the exit code."""
    settings = get_settings()
    show.print(f"execution [bold]{handle.id}[/] (workflow {handle.workflow_id})")
    if detach:
        if as_json:
            print(
                json.dumps({"execution_id": handle.id, "workflow_id": handle.workflow_id}),
                file=result_out,
            )
        return 0
    hierarchical = spec.process == "hierarchical"
    async for event in handle.events():
        if (line := _describe(event, hierarchical=hierarchical)) is not None:
            show.print(line, highlight=False)
        if prompt and event.type == EventType.HUMAN_INPUT_REQUESTED:
            from cli.ops import answer_prompt, terminal_reader

            await answer_prompt(handle, event, show, terminal_reader(show))
    try:
        result = await handle.result()
    except (ExecutionFailedError, ExecutionCancelledError) as exc:
        if as_json:
            status = "cancelled" if isinstance(exc, ExecutionCancelledError) else "failed"
            print(
                json.dumps({"execution_id": handle.id, "status": status, "error": str(exc)}),
                file=result_out,
            )
        else:
            err.print(f"[bold red]execution {handle.id} {exc}[/]", highlight=False)
        return EXIT_CANCELLED if isinstance(exc, ExecutionCancelledError) else EXIT_FAILED
    if result.stopped:
        if as_json:
            print(
                json.dumps({"status": "stopped", **result.model_dump(mode="json")}, indent=2),
                file=result_out,
            )
        else:
            err.print(f"[yellow]execution {result.execution_id} was stopped[/]")
        return EXIT_CANCELLED
    if as_json:
        print(
            json.dumps({"status": "completed", **result.model_dump(mode="json")}, indent=2),
            file=result_out,
        )
    else:
        out.rule("final output")
        out.print(result.output, highlight=False, markup=False)
        if result.json_dict is not None:
            out.rule("structured output")
            out.print(json.dumps(result.json_dict, indent=2), highlight=False, markup=False)
        written = [t.output_file for t in result.tasks if t.output_file]
        if written:
            out.print(
                "output files (under "
                f"{settings.readable_files_dir()}): {', '.join(str(w) for w in written)}",
                highlight=False,
            )
        out.rule()
        out.print(
            f"execution id: [bold]{result.execution_id}[/]  tokens: "
            f"{result.token_usage.total_tokens}"
        )
    return 0


@app.command()
def validate(
    spec_file: Annotated[
        list[Path],
        typer.Argument(
            help="A crew spec (YAML or JSON), a CrewAI project directory, or agents.yaml "
            "and tasks.yaml."
        ),
    ],
) -> None:
    """Check a crew and print it normalised (YAML, usable as a spec file); refuse what no
    worker here could resolve (tools, providers, endpoints)."""
    from kasal.catalog import Catalog, check_spec
    from kasal.exceptions import UnrunnableSpecError
    from kasal.tools import load_tool_modules, registered_tools

    try:
        spec, _ = load_crew(spec_file)
        # What a worker here would resolve: the built-in tools and KASAL_TOOL_MODULES'.
        settings = get_settings()
        load_tool_modules(settings.tool_modules)
        catalog = Catalog.of(
            registered_tools(),
            base_urls=settings.llm_base_urls,
            source="the tools a worker on this machine loads (built in and KASAL_TOOL_MODULES)",
        )
        problems = check_spec(spec, catalog)
        if problems:
            raise UnrunnableSpecError(
                "the spec names what no worker here can resolve",
                details=[p.as_dict() for p in problems],
            )
    except KasalError as exc:
        raise _fail(exc) from None
    # Plainly, not through rich: rich wraps long lines at the terminal width, which breaks
    # YAML (a wrapped plain scalar is another key, or a syntax error).
    sys.stdout.write(spec.to_yaml())


#: The line ``kasal worker`` prints on stderr once it polls its task queue.
READY_LINE = "kasal worker ready"


@app.command()
def worker(
    project: Annotated[
        list[Path] | None,
        typer.Option(
            "--project",
            help="A CrewAI project this worker serves (repeatable): its crews run by name, "
            "built from its own code. Default: KASAL_PROJECTS.",
        ),
    ] = None,
    ready_file: Annotated[
        Path | None,
        typer.Option(
            help="Write this file (JSON: pid, address, namespace, task queue) once the worker "
            "polls its task queue; removed at exit. For scripts and health checks. "
            "Default: KASAL_WORKER_READY_FILE.",
        ),
    ] = None,
) -> None:
    """Run a worker against the configured Temporal (KASAL_TEMPORAL_ADDRESS).

    Ready once it prints ``kasal worker ready: ...`` on stderr (and writes ``--ready-file``).
    """
    settings = get_settings()
    if project:
        settings = settings.model_copy(update={"projects": [*settings.projects, *project]})
    try:
        from kasal.project import load_project

        for path in settings.projects:
            loaded = load_project(path)
            err.print(f"serving CrewAI project {loaded.name} ({loaded.root})", highlight=False)
    except KasalError as exc:
        raise _fail(exc) from None
    ready_file = ready_file or settings.worker_ready_file
    if settings.embedded:
        raise _fail(
            TemporalUnavailableError(
                "no Temporal configured: set KASAL_TEMPORAL_ADDRESS (host:port), or use "
                "`kasal dev` to run the embedded server with a worker"
            )
        )
    _setup_logging()
    try:
        asyncio.run(_worker(settings, ready_file))
    except KasalError as exc:
        raise _fail(exc) from None
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)  # a stale file must not claim readiness


async def _worker(settings: Settings, ready_file: Path | None = None) -> None:
    from kasal import telemetry
    from kasal.client import connect, ensure_search_attributes
    from workflows.observability import sdk_runtime, start_metrics_server
    from workflows.worker import run_worker

    telemetry.configure_tracing("kasal-worker", capture_content=settings.otel_capture_content)
    runtime, sdk_metrics_url = sdk_runtime(settings)
    client = await connect(settings.temporal_address, settings.temporal_namespace, runtime=runtime)
    await ensure_search_attributes(client)
    metrics_server = start_metrics_server(settings, sdk_metrics_url)
    stop = _stop_on_signals()
    ready = asyncio.Event()
    where = (
        f"Temporal {settings.temporal_address}, namespace {settings.temporal_namespace}, "
        f"task queue {settings.task_queue}"
    )
    err.print(f"worker starting: {where}", highlight=False)
    running = asyncio.create_task(
        run_worker(client, settings.task_queue, stop=stop, ready=ready, settings=settings)
    )
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "address": settings.temporal_address,
                        "namespace": settings.temporal_namespace,
                        "task_queue": settings.task_queue,
                    }
                )
            )
        # Plain print, flushed: scripts wait for this line.
        print(f"{READY_LINE}: polling {where}", file=sys.stderr, flush=True)
    else:
        waiting.cancel()
    try:
        await running
    finally:
        if metrics_server is not None:
            metrics_server.stop()


@app.command()
def dev(
    api_port: Annotated[int, typer.Option(help="Port of the REST API (0: no API).")] = 8000,
    host: Annotated[str, typer.Option(help="Interface the API listens on.")] = "127.0.0.1",
) -> None:
    """Run everything locally: Temporal dev server (Web UI on), a worker and the API."""
    settings = get_settings()
    default_secret = Settings.model_fields["secret_key"].default.get_secret_value()
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if api_port and not loopback and settings.secret_key.get_secret_value() == default_secret:
        raise _fail(
            InvalidSpecError(
                f"refusing to serve the API on {host} with the default (public) secret: "
                "set KASAL_SECRET_KEY",
                field="host",
            )
        )
    _setup_logging()
    from kasal import telemetry

    # Before any client connects: the worker's client carries the tracing interceptor.
    telemetry.configure_tracing("kasal-dev", capture_content=settings.otel_capture_content)
    if enable_offline_fallback(settings):
        from kasal.llm import offline_default_reason

        if reason := offline_default_reason():
            err.print(
                f"[yellow]{reason}: agents without a provider key run on the offline model "
                "(each execution logs which and why); KASAL_OFFLINE_FALLBACK=false to fail "
                "instead[/]",
                highlight=False,
            )
    try:
        asyncio.run(_dev(api_port, host))
    except KasalError as exc:
        raise _fail(exc) from None


def offline_fallback_for(settings: Settings, environ: dict[str, str] | None = None) -> bool:
    """Whether ``kasal run`` and ``kasal dev`` (its API too) run keyless agents offline.

    On the embedded default, yes (a fresh machine runs the example crew, through the CLI
    and through the API alike) unless ``KASAL_OFFLINE_FALLBACK`` says otherwise; with a
    configured Temporal, only if ``KASAL_OFFLINE_FALLBACK`` asks for it.
    """
    explicit = (os.environ if environ is None else environ).get("KASAL_OFFLINE_FALLBACK")
    if explicit is not None and explicit.strip():
        return settings.offline_fallback
    return settings.embedded


def enable_offline_fallback(settings: Settings) -> bool:
    """``kasal dev``'s wiring: turn the fallback on for the whole process if it applies.

    The API starts executions through :func:`kasal.client.start_execution`, which reads the
    process settings; so the setting goes into the environment, not only into a copy.
    """
    if not offline_fallback_for(settings):
        return False
    os.environ["KASAL_OFFLINE_FALLBACK"] = "true"
    get_settings.cache_clear()
    return True


async def _dev(api_port: int, host: str) -> None:
    from kasal.client import Runtime

    settings = get_settings()
    stop = _stop_on_signals()
    # The API starts executions on the shared task queue: this worker serves it.
    async with Runtime(settings, in_process_worker=True, private_queue=False) as rt:
        for note in rt.describe():
            err.print(note, highlight=False)
        if rt.server is not None and rt.server.ui_url:
            err.print(f"Temporal Web UI: {rt.server.ui_url}")
        server_task = None
        if api_port:
            server_task = asyncio.create_task(_serve_api(settings, rt, host, api_port, stop))
            err.print(f"API: http://{host}:{api_port}/api/docs")
        await stop.wait()
        if server_task is not None:
            await server_task


async def _serve_api(
    settings: Settings, rt: Any, host: str, port: int, stop: asyncio.Event
) -> None:
    import uvicorn

    try:
        from api.main import create_app
    except ImportError as exc:  # pragma: no cover - API package missing
        err.print(f"[yellow]API not available: {exc}[/]")
        return
    if rt.server is not None and settings.embedded:
        settings = settings.model_copy(update={"temporal_address": rt.server.address})
    config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign,attr-defined]
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _setup_logging() -> None:
    if get_settings().log_format.lower() == "json":
        from kasal.telemetry import configure_json_logs

        configure_json_logs()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("temporalio", "alembic", "httpx", "crewai_core"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Replay and debugging commands register themselves on ``app``.
from cli import debug as _debug  # noqa: E402,F401

_register_operations()

if __name__ == "__main__":
    main()
