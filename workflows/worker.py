"""The worker: wires the Temporal client, the data converter, the workflow and activities."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from types import CodeType, ModuleType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import Client
from temporalio.converter import DataConverter, StorageDriverStoreContext
from temporalio.worker import (
    FixedSizeSlotSupplier,
    Worker,
    WorkerTuner,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import Info, _Definition

from kasal.db.journal import JournalStore
from kasal.settings import Settings, get_settings
from workflows.crew_workflow import CrewWorkflow
from workflows.operations import RetentionWorkflow, ScheduledCrewRun, WebhookDeliveryWorkflow

log = logging.getLogger(__name__)

#: The SDK's default for local activities (Kasal's record of an execution runs as one).
LOCAL_ACTIVITY_SLOTS = 100

#: Modules the sandbox shares instead of re-importing per run: only the data modules the
#: workflow carries (deterministic; re-importing them costs 0.5-1 s per workflow run), the
#: signing key, and their dependencies. Never a module with workflow code: the sandbox must
#: re-import those to check their calls (``datetime.now()`` in a workflow must fail).
PASSTHROUGH = (
    "kasal.spec",
    "kasal.execution",
    "kasal.constants",
    "kasal.exceptions",
    "kasal.signing",
    "kasal.webui",
    "activities.models",
    "pydantic",
    "pydantic_core",
    "yaml",
)


#: Packages whose modules the sandbox re-imports for every workflow run: their code objects
#: are unmarshalled once per process and shared (see :class:`SharedCodeFinder`).
SHARED_CODE_PACKAGES = ("workflows",)


class _SharedCodeLoader(importlib.machinery.SourceFileLoader):
    """A source loader that unmarshals a module's code once per process.

    The sandbox still executes the module afresh for each workflow run (new globals, new
    functions and classes, every call checked); only the immutable code objects, which the
    default loader re-reads from the ``.pyc`` every time, are shared. Measured: ~100 kB
    per cached workflow run (crew_workflow and bookkeeping), most of what the sandbox
    costs a running execution besides its state. Where the workflow modules have no
    ``.pyc`` (a source checkout run with ``PYTHONDONTWRITEBYTECODE``, as the benchmarks
    here are) the default loader even compiled the source for every run: replaying a
    recorded crew, 54 -> 31-37 ms of CPU per run.

    The code is read once per process and never looked at again on disk: a worker runs the
    workflow code it started with (an edit under a running worker is not picked up by its
    next runs, which could otherwise mix two versions of the code in one process).
    """

    _codes: dict[str, CodeType] = {}
    _lock = threading.Lock()

    def get_code(self, fullname: str) -> CodeType | None:
        path = self.get_filename(fullname)
        code = self._codes.get(path)
        if code is None:
            code = super().get_code(fullname)
            if code is not None:
                with self._lock:
                    self._codes[path] = code
        return code


class SharedCodeFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``packages`` as Python would, loading them with
    :class:`_SharedCodeLoader` (source files only; anything else is left to Python).

    Where a module is is looked up once per process: a new workflow's sandbox imports the
    workflow modules again, and each lookup was a series of ``stat`` calls. Each releases
    the GIL, and with many threads busy getting it back took milliseconds every time: a
    burst of new crews made instance creations outlast the SDK's 2 s deadlock timeout.
    """

    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = tuple(packages)
        self._found: dict[str, tuple[str, str, list[str] | None] | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not any(fullname.startswith(p + ".") for p in self.packages):
            return None
        if fullname not in self._found:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
            if (
                spec is None
                or type(spec.loader) is not importlib.machinery.SourceFileLoader
                or spec.origin is None
            ):
                self._found[fullname] = None
                return spec
            self._found[fullname] = (fullname, spec.origin, spec.submodule_search_locations)
        found = self._found[fullname]
        if found is None:
            return importlib.machinery.PathFinder.find_spec(fullname, path, target)
        name, origin, locations = found
        # A fresh spec each time (an import marks its spec while it runs), from what was found.
        return importlib.util.spec_from_file_location(
            name,
            origin,
            loader=_SharedCodeLoader(name, origin),
            submodule_search_locations=list(locations) if locations is not None else None,
        )


def share_workflow_code(packages: Sequence[str] = SHARED_CODE_PACKAGES) -> None:
    """Share the code objects of ``packages``' modules between sandboxed workflow runs
    (idempotent)."""
    for finder in sys.meta_path:
        if isinstance(finder, SharedCodeFinder) and set(packages) <= set(finder.packages):
            return
    sys.meta_path.insert(0, SharedCodeFinder(packages))


class _CreationLoop(asyncio.AbstractEventLoop):
    """The running loop while a workflow instance is created off the worker's loop: only a
    place the SDK keeps the instance's runtime during its interceptors' set-up."""


class _DeferredInstance(WorkflowInstance):
    """A workflow instance created by its first activation, on the activation's thread.

    The SDK creates a new workflow's instance on the worker's event loop, and a sandboxed
    one takes milliseconds (a fresh import of the workflow modules). With hundreds of crews
    starting at once that held the loop for tens of seconds: running activities' heartbeats
    and starts waited behind it, and attempts the server had handed out timed out
    (heartbeat timeouts on a healthy worker). Activations already run on the SDK's
    workflow-task threads, within its deadlock timeout; creating the instance there too
    leaves the loop free. What the instance does is unchanged.
    """

    def __init__(
        self, runner: WorkflowRunner, details: WorkflowInstanceDetails, contexts: bool
    ) -> None:
        self._runner = runner
        self._details = details
        self._contexts = contexts
        self._instance: WorkflowInstance | None = None
        self._creating_thread: int | None = None

    def _created(self) -> WorkflowInstance:
        if self._instance is None:
            # The SDK activates one workflow on one thread at a time: no lock needed.
            self._creating_thread = threading.get_ident()
            # The SDK's instance sets itself on the running loop while its interceptors are
            # made (so they may read ``workflow.info()``), as it would on the worker's loop;
            # this thread has none: a placeholder stands in, as the SDK's own instance
            # stands in while it activates.
            outer = asyncio._get_running_loop()
            asyncio._set_running_loop(_CreationLoop())  # type: ignore[abstract]
            try:
                self._instance = self._runner.create_instance(self._details)
            finally:
                asyncio._set_running_loop(outer)
                self._creating_thread = None
        return self._instance

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        if self._instance is None and all(job.HasField("remove_from_cache") for job in act.jobs):
            # Evicted before it ever ran (its first activation failed or timed out): there is
            # nothing to tear down, and building a sandbox only to drop it, within the
            # deadlock timeout again, is what an overloaded worker can least afford.
            completion = WorkflowActivationCompletion(run_id=act.run_id)
            completion.successful.SetInParent()
            return completion
        return self._created().activate(act)

    def get_serialization_context(self, command_info: Any) -> Any:
        if not self._contexts:
            return None
        return self._created().get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        if not self._contexts:
            return StorageDriverStoreContext(target=None)
        return self._created().get_external_store_context(command_info)

    def get_info(self) -> Info:
        return self._details.info

    def get_thread_id(self) -> int | None:
        if self._instance is None:
            return self._creating_thread
        return self._instance.get_thread_id()


class DeferredRunner(WorkflowRunner):
    """``runner``, its instances created off the event loop (see :class:`_DeferredInstance`).

    ``data_converter``: the worker's. One with no payload codec and no external storage
    uses no serialization context when it encodes or decodes an activation's payloads (its
    codec steps are no-ops), yet the SDK asks the sandbox for one for every payload, on the
    event loop, each time executing a fresh code string in the sandbox (2-3% of a loaded
    worker's CPU): for such a converter nobody is asked.
    """

    def __init__(self, runner: WorkflowRunner, data_converter: DataConverter | None = None) -> None:
        self.runner = runner
        self.contexts = data_converter is None or bool(
            data_converter.payload_codec or data_converter.external_storage
        )

    def prepare_workflow(self, defn: _Definition) -> None:
        self.runner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _DeferredInstance(self.runner, det, self.contexts)

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        self.runner.set_worker_level_failure_exception_types(types)


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with Kasal's data modules passed through (and the workflow modules'
    code objects shared between runs, their execution not)."""
    share_workflow_code()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def workflow_runner(data_converter: DataConverter | None = None) -> DeferredRunner:
    """The runner Kasal's workers and replays use: the sandbox of :func:`sandbox_runner`,
    each instance created on its first activation's thread, not the event loop (and, given
    the worker's ``data_converter``, asked for serialization contexts only if it uses them)."""
    return DeferredRunner(sandbox_runner(), data_converter)


async def prepare_database(settings: Settings) -> None:
    """Bring the app database's schema up to date, so finished executions can be recorded,
    and publish the tools this worker resolves, so the API can refuse unknown ones up front.

    A database that cannot be reached does not stop the worker: its task attempts fail with
    ``journal_unavailable`` (their paid calls could not be journaled) and Temporal retries
    them until the database is back; recording retries too.
    """
    from kasal.catalog import publish_worker_tools
    from kasal.db.engine import create_engine
    from kasal.db.migrate import migrate
    from kasal.tool_catalog import available_tools, describe_tools, publish_descriptions
    from kasal.tools import load_tool_modules

    engine = create_engine(settings.resolved_database_url(), pooled=False)
    try:
        try:
            await migrate(engine)
        except Exception as exc:
            log.error("could not migrate the app database (%s): nothing will be recorded", exc)
            return
        try:
            load_tool_modules(settings.tool_modules)  # what build_worker loads, loaded first
            # Only the tools that work here (configured, reachable) are published as runnable;
            # every known tool is described, with why it does not work if it does not.
            described = describe_tools(settings)
            await publish_worker_tools(engine, settings.task_queue, available_tools(described))
            await publish_descriptions(engine, described)
        except Exception as exc:
            log.error("could not publish this worker's tools (%s): the API may refuse them", exc)
        if settings.projects:
            await publish_projects(engine, settings)
    finally:
        await engine.dispose()


async def publish_projects(engine: Any, settings: Settings) -> None:
    """Publish the CrewAI projects this worker serves, as spec data the API can start."""
    from kasal.catalog import worker_identity
    from kasal.db.engine import session_factory
    from kasal.db.projects import ProjectRepository
    from kasal.project import load_project

    for path in settings.projects:
        try:
            project = load_project(path)
            spec = project.to_spec()
            inputs = project.default_inputs()
            async with session_factory(engine)() as session, session.begin():
                await ProjectRepository(session).publish(
                    project.name,
                    settings.task_queue,
                    worker_identity(),
                    spec.model_dump(mode="json"),
                    inputs,
                )
        except Exception as exc:
            log.error("could not publish CrewAI project %s (%s)", path, exc)


def build_worker(
    client: Client,
    task_queue: str,
    sessions: async_sessionmaker[AsyncSession],
    *,
    settings: Settings | None = None,
    executor: concurrent.futures.Executor | None = None,
    journal: JournalStore | None = None,
    **options: Any,
) -> Worker:
    """A worker for crew workflows and their activities on ``task_queue``.

    ``sessions`` reach the app database: the journal of paid calls (``journal``, by
    default in the same database), blobs, the record.
    """
    from activities.admission import ActivityAdmission
    from activities.crew_activities import CrewActivities
    from activities.journal import ComputeSlots
    from activities.operations import OperationsActivities
    from activities.persistence import PersistenceActivities
    from kasal import signing
    from kasal.blobs import BlobStore
    from kasal.memory import MemoryStore
    from kasal.tools import load_tool_modules

    settings = settings or get_settings()
    load_tool_modules(settings.tool_modules)
    if settings.projects:
        from kasal.project import load_project

        for path in settings.projects:
            load_project(path)  # their crews are built from their code, per task
    signing.configure(settings.resolved_worker_secret())
    journal = journal or JournalStore(sessions)
    slots = ComputeSlots(settings.compute_slots)
    activities = CrewActivities(
        journal,
        executor=executor,
        blobs=BlobStore(sessions),
        memory=MemoryStore(sessions),
        slots=slots,
        heartbeats_per_second=settings.heartbeats_per_second,
        cancels_pushed=settings.cancel_push,
    )
    persistence = PersistenceActivities(sessions, journal)
    operations = OperationsActivities(sessions, settings)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[CrewWorkflow, ScheduledCrewRun, WebhookDeliveryWorkflow, RetentionWorkflow],
        activities=[
            activities.run_task,
            activities.manager_step,
            activities.plan_crew,
            activities.stash_outputs,
            persistence.record_execution,
            operations.prepare_scheduled_run,
            operations.deliver_webhook,
            operations.purge_expired,
        ],
        workflow_runner=workflow_runner(client.data_converter),
        tuner=WorkerTuner.create_composite(
            workflow_supplier=FixedSizeSlotSupplier(settings.max_concurrent_workflow_tasks),
            activity_supplier=ActivityAdmission(
                settings.max_concurrent_activities, settings.compute_backlog, slots
            ),
            local_activity_supplier=FixedSizeSlotSupplier(LOCAL_ACTIVITY_SLOTS),
            nexus_supplier=FixedSizeSlotSupplier(LOCAL_ACTIVITY_SLOTS),
        ),
        max_cached_workflows=settings.max_cached_workflows,
        # A dead worker's sticky queue holds its workflows' tasks until this passes; the
        # 10 s default slows every recovery.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
        # Where the server cannot push cancels, heartbeats carry them back: at most 1 s
        # apart (by default), a cancelled task stops within about a second instead of 0.8 x
        # its heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=settings.heartbeat_throttle_seconds),
        **options,
    )


async def run_worker(
    client: Client,
    task_queue: str,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    settings: Settings | None = None,
) -> None:
    """Run a worker until ``stop`` is set (or for ever)."""
    from activities.loops import install as own_task_loops
    from kasal.db.engine import create_engine, session_factory
    from kasal.heap import settle as settle_heap
    from kasal.heap import tidy_when_quiet
    from kasal.thread_pool import IdleThreadPool

    settings = settings or get_settings()
    await prepare_database(settings)
    # Pooled: every paid LLM call is journaled before CrewAI goes on.
    engine = create_engine(settings.resolved_database_url())
    try:
        # Attempt threads end after a minute idle: a burst's do not stay for the worker's life.
        with IdleThreadPool(
            settings.max_concurrent_activities, idle_seconds=60, thread_name_prefix="kasal-task"
        ) as executor:
            worker = build_worker(
                client, task_queue, session_factory(engine), settings=settings, executor=executor
            )
            # Before polling: the one full collection stops nobody's task.
            tidy = None
            if settle_heap(settings.gc_young_threshold):
                tidy = asyncio.create_task(tidy_when_quiet())  # what a burst left, freed
            own_task_loops()  # CrewAI's asyncio.run per step, beside thousands of tasks
            try:
                async with worker:
                    await _retention(client, settings, task_queue)
                    log.info("worker polling task queue %s", task_queue)
                    if ready is not None:
                        ready.set()
                    await (stop.wait() if stop is not None else asyncio.Event().wait())
            finally:
                if tidy is not None:
                    tidy.cancel()
    finally:
        await engine.dispose()


async def _retention(client: Client, settings: Settings, task_queue: str) -> None:
    """Kasal's retention schedule, as this worker's settings say (only workers of the
    shared queue manage it: a process-local queue disappears with its process)."""
    if task_queue != settings.task_queue:
        return
    from kasal.schedules import ensure_retention_schedule

    try:
        if await ensure_retention_schedule(client, settings.retention_days, task_queue=task_queue):
            log.info(
                "retention: executions finished %g days ago are purged", settings.retention_days
            )
    except Exception as exc:
        log.warning("could not set up the retention schedule: %s", exc)


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, settings: Settings | None = None
) -> AsyncIterator[None]:
    """An in-process worker on ``task_queue`` for the duration of the block (tests,
    benchmarks): ready when the block starts, stopped when it ends."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_worker(client, task_queue, stop=stop, ready=ready, settings=settings)
    )
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
