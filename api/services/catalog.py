"""The workers' catalog as the API sees it, and the up-front check of crews against it.

Workers publish the tools they resolve into the app database at start
(``kasal.catalog.publish_worker_tools``); Temporal says which workers poll the task queue
now. The catalog is the union of the polling workers' tools; if none of the publishers is
polling (workers down, or started with a custom identity), every catalog published for the
queue counts; if none was ever published, the built-in registry does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from kasal.catalog import (
    BUILTIN_TOOLS,
    SOURCE_BUILTIN,
    SOURCE_LIVE,
    SOURCE_PUBLISHED,
    Catalog,
    check_spec,
)
from kasal.db.repositories import WorkerCatalogRepository
from kasal.exceptions import UnrunnableSpecError
from kasal.spec import CrewSpec

log = logging.getLogger(__name__)

#: Seconds the pollers question may take before the check goes on without the answer.
DESCRIBE_TIMEOUT = 3.0


async def polling_identities(client: Client | None, task_queue: str) -> set[str] | None:
    """Identities of the workers polling ``task_queue`` for activities (tools run in
    activities), or None when Temporal cannot say."""
    if client is None:
        return None
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    try:
        response = await asyncio.wait_for(
            client.workflow_service.describe_task_queue(request), DESCRIBE_TIMEOUT
        )
    except Exception as exc:  # the check degrades to every published catalog
        log.info("could not list the pollers of %s: %s", task_queue, exc)
        return None
    return {poller.identity for poller in response.pollers}


async def load_catalog(
    session: AsyncSession, client: Client | None, task_queue: str, base_urls: Sequence[str]
) -> Catalog:
    """What the workers of ``task_queue`` resolve (see the module docstring). ``base_urls``
    is the endpoint allowlist: the API's ``KASAL_LLM_BASE_URLS``, as the workers' should be."""
    rows = await WorkerCatalogRepository(session).for_queue(task_queue)
    if not rows:
        return Catalog.of(BUILTIN_TOOLS, base_urls=base_urls, source=SOURCE_BUILTIN)
    polling = await polling_identities(client, task_queue)
    live = [row for row in rows if polling is not None and row.identity in polling]
    chosen, source = (live, SOURCE_LIVE) if live else (rows, SOURCE_PUBLISHED)
    tools = {name for row in chosen for name in row.tools}
    return Catalog.of(tools, base_urls=base_urls, source=source)


def require_runnable(spec: CrewSpec, catalog: Catalog) -> None:
    """Raise :class:`UnrunnableSpecError` listing everything in ``spec`` that ``catalog``
    cannot serve (422, before anything is stored or started)."""
    problems = check_spec(spec, catalog)
    if not problems:
        return
    text = "; ".join(f"{p.field}: {p.message}" for p in problems)
    raise UnrunnableSpecError(
        text,
        field=problems[0].field if len(problems) == 1 else None,
        details=[p.as_dict() for p in problems],
    )


async def check_runnable(
    session: AsyncSession,
    client: Client | None,
    spec: CrewSpec,
    *,
    task_queue: str,
    base_urls: Sequence[str],
) -> None:
    """Load the catalog and check ``spec`` against it."""
    require_runnable(spec, await load_catalog(session, client, task_queue, base_urls))
