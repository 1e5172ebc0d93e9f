"""The workflow sandbox checks Kasal's workflow code: only data modules pass through it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import (
    RemoveFromCache,
    WorkflowActivation,
    WorkflowActivationJob,
)
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.worker import Worker, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox._importer import Importer

from tests.workflows.probe_workflows import ClockReadingWorkflow, EchoWorkflow
from workflows.worker import (
    PASSTHROUGH,
    DeferredRunner,
    SharedCodeFinder,
    _SharedCodeLoader,
    sandbox_runner,
    share_workflow_code,
    workflow_runner,
)


def test_workflow_modules_are_not_passed_through():
    importer = Importer(sandbox_runner().restrictions, None)  # type: ignore[arg-type]
    for module in ("workflows.crew_workflow", "workflows.bookkeeping", "workflows.worker"):
        assert not importer.module_configured_passthrough(module), module
    for module in ("kasal.spec", "kasal.execution", "activities.models", "kasal.signing"):
        assert importer.module_configured_passthrough(module), module
    # Whole packages would take the workflow modules in with them.
    assert not {"kasal", "activities", "workflows"} & set(PASSTHROUGH)


async def clock_read_fails(client, runs: int = 1) -> None:
    """Run ``ClockReadingWorkflow`` ``runs`` times with Kasal's sandbox settings: each run's
    ``datetime.now()`` must fail its workflow task."""
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ClockReadingWorkflow],
        workflow_runner=workflow_runner(),
        workflow_failure_exception_types=[Exception],
    ):
        for _ in range(runs):
            with pytest.raises(WorkflowFailureError) as failure:
                await asyncio.wait_for(
                    client.execute_workflow(
                        ClockReadingWorkflow.run, id=f"clock-{uuid.uuid4()}", task_queue=queue
                    ),
                    30,
                )
            cause = failure.value.cause
            assert "RestrictedWorkflowAccessError" in repr(cause) or (
                "restricted" in str(cause).lower()
            )


async def test_a_clock_read_in_workflow_code_is_caught(temporal_client):
    await clock_read_fails(temporal_client)


async def test_shared_code_is_still_checked_by_the_sandbox(temporal_client):
    """A workflow module whose code objects are shared between runs is still executed, and
    its calls checked, afresh in every run's sandbox."""
    share_workflow_code(("tests.workflows",))
    try:
        await clock_read_fails(temporal_client, runs=2)  # the second run gets the shared code
    finally:  # test modules are pytest's to load (assertion rewriting)
        sys.meta_path[:] = [
            f
            for f in sys.meta_path
            if not (isinstance(f, SharedCodeFinder) and f.packages == ("tests.workflows",))
        ]
    shared = set(_SharedCodeLoader._codes)
    assert any(path.endswith("probe_workflows.py") for path in shared)


def test_shared_code_loader_is_installed_once():
    share_workflow_code()
    share_workflow_code()
    finders = [f for f in sys.meta_path if isinstance(f, SharedCodeFinder)]
    assert sum("workflows" in f.packages for f in finders) == 1


class _SlowSandbox(type(sandbox_runner())):  # type: ignore[misc]
    """Kasal's sandbox, each instance taking ``delay`` s to create (a heavy workflow module
    under load) and noting the thread that created it."""

    delay = 0.4

    def __init__(self) -> None:
        super().__init__(restrictions=sandbox_runner().restrictions)
        object.__setattr__(self, "threads", [])

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        self.threads.append(threading.get_ident())  # type: ignore[attr-defined]
        time.sleep(self.delay)
        return super().create_instance(det)


async def test_workflow_instances_are_created_off_the_event_loop(temporal_client):
    """Creating a sandboxed instance takes milliseconds; the SDK does it on the worker's event
    loop, where with hundreds of crews starting at once it starved running activities of
    their heartbeats. Kasal's runner creates each on its first activation's thread: the loop
    keeps ticking while instances are made, and the workflows still run in the sandbox."""
    sandbox = _SlowSandbox()
    queue = f"deferred-{uuid.uuid4().hex[:8]}"
    loop_thread = threading.get_ident()
    lags: list[float] = []

    async def tick() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async with Worker(
        temporal_client,
        task_queue=queue,
        workflows=[EchoWorkflow],
        workflow_runner=DeferredRunner(sandbox),
        max_concurrent_workflow_tasks=4,
    ):
        sandbox.threads.clear()  # the one the worker's start made, checking the definition
        ticker = asyncio.create_task(tick())
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        temporal_client.execute_workflow(
                            EchoWorkflow.run,
                            f"run {i}",
                            id=f"echo-{uuid.uuid4()}",
                            task_queue=queue,
                        )
                        for i in range(4)
                    )
                ),
                30,
            )
        finally:
            ticker.cancel()
    assert results == [f"run {i}" for i in range(4)]
    assert len(sandbox.threads) == 4
    assert loop_thread not in sandbox.threads
    # On the loop, four instances would have stopped it for 0.4 s each.
    assert max(lags) < sandbox.delay / 2, max(lags)


class _ContextNotingCodec(PayloadCodec, WithSerializationContext):
    """A codec that changes nothing and notes the serialization contexts it is given."""

    def __init__(self, seen: list[object], context: object = None) -> None:
        self.seen, self.context = seen, context

    def with_context(self, context: SerializationContext) -> _ContextNotingCodec:
        return _ContextNotingCodec(self.seen, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.seen.append(self.context)
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


async def test_the_sandbox_is_asked_for_serialization_contexts_only_when_they_are_used(
    temporal_client,
):
    """Kasal's converter (no codec, no external storage) encodes without any context, so
    the sandbox is not asked for one per payload; a worker whose codec takes contexts still
    gets the workflow's."""
    assert not workflow_runner(pydantic_data_converter).contexts
    assert workflow_runner().contexts  # no converter known: ask, as the SDK does
    seen: list[object] = []
    converter = dataclasses.replace(
        pydantic_data_converter, payload_codec=_ContextNotingCodec(seen)
    )
    client = Client(
        temporal_client.service_client,
        namespace=temporal_client.namespace,
        data_converter=converter,
    )
    queue = f"contexts-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[EchoWorkflow],
        workflow_runner=workflow_runner(client.data_converter),
    ):
        # Started and read without the codec: what it sees is the worker's encoding only.
        result = await temporal_client.execute_workflow(
            EchoWorkflow.run, "hello", id=f"echo-{queue}", task_queue=queue
        )
    assert result == "hello"
    assert any(isinstance(c, WorkflowSerializationContext) for c in seen), seen


def test_workflow_modules_are_found_and_read_once_per_process(tmp_path):
    """A new workflow's sandbox imports the workflow modules again; finding and reading them
    touched the disk every time (``stat`` calls, each a GIL hand-off: under a burst of new
    crews, instance creations outlasted the SDK's 2 s deadlock timeout). Found and read
    once, a module still gets a fresh spec per import, and the code the worker started with."""
    package = tmp_path / "kasal_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 42\n")
    finder = SharedCodeFinder(("kasal_probe_pkg",))
    first = finder.find_spec("kasal_probe_pkg.mod", [str(package)])
    assert first is not None and isinstance(first.loader, _SharedCodeLoader)
    code = first.loader.get_code("kasal_probe_pkg.mod")
    (package / "mod.py").rename(package / "moved.py")  # nothing left on disk to find
    again = finder.find_spec("kasal_probe_pkg.mod", [str(package)])
    assert again is not None and again is not first and again.origin == first.origin
    assert isinstance(again.loader, _SharedCodeLoader)
    assert again.loader.get_code("kasal_probe_pkg.mod") is code
    namespace: dict[str, object] = {}
    exec(code, namespace)
    assert namespace["VALUE"] == 42
    assert finder.find_spec("elsewhere.mod") is None  # other packages are Python's to find


def test_a_workflow_evicted_before_it_ran_builds_no_sandbox():
    """A workflow whose first activation failed is evicted next: its instance was never
    built, and the eviction must not build one only to drop it."""
    sandbox = _SlowSandbox()
    sandbox.delay = 0
    instance = DeferredRunner(sandbox).create_instance(None)  # type: ignore[arg-type]
    eviction = WorkflowActivation(
        run_id="run-1",
        jobs=[WorkflowActivationJob(remove_from_cache=RemoveFromCache(message="failed"))],
    )
    completion = instance.activate(eviction)
    assert completion.HasField("successful") and completion.run_id == "run-1"
    assert sandbox.threads == []  # no instance was created


def test_while_an_instance_is_created_its_thread_is_the_one_a_deadlock_report_reads():
    """The SDK reads an activation's thread to show its stack when it outlasts the deadlock
    timeout; while the instance is still being created, that is the creating thread."""
    sandbox = _SlowSandbox()
    sandbox.delay = 0.5
    instance = DeferredRunner(sandbox).create_instance(None)  # type: ignore[arg-type]
    assert instance.get_thread_id() is None

    def create() -> None:
        with contextlib.suppress(Exception):  # no real details: creation fails after the wait
            instance.get_serialization_context(None)

    creator = threading.Thread(target=create)
    creator.start()
    time.sleep(0.2)
    assert instance.get_thread_id() == creator.ident
    creator.join(5)
    assert instance.get_thread_id() is None
