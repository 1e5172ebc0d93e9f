"""Stopping, waiting for and deleting executions.

- **stop** (graceful): a ``stop`` signal; the workflow lets the running task finish, starts
  no new one and ends ``stopped``. A signal, not an update: it is durable even while no
  worker runs, and the workflow acts on it at its next step.
- **force-stop**: Temporal cancellation now (running tasks stop at once where the server
  pushes cancels, within a heartbeat where it does not, even in the middle of a provider
  call); if the workflow has not closed within ``KASAL_FORCE_STOP_SECONDS`` (no worker, a
  stuck one) it is terminated and the row is reconciled to ``terminated``.

Both write who asked and when on the row before anything is sent to Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.services.executions import temporal_error
from kasal.client import delete_workflow_history
from kasal.constants import STOP_SIGNAL, workflow_id_for
from kasal.db.models import Execution, utcnow
from kasal.db.purge import purge
from kasal.db.repositories import FINISHED
from kasal.exceptions import ConflictError
from kasal.execution import StopInput
from kasal.reconcile import reconcile_execution

log = logging.getLogger(__name__)


async def note_stop(session: AsyncSession, execution: Execution, mode: str, by: str) -> datetime:
    """Record who asked to stop and how (the first request wins), committed at once."""
    if execution.stop_requested_at is None or execution.stop_mode != mode:
        execution.stop_requested_by = by
        execution.stop_requested_at = utcnow()
        execution.stop_mode = mode
        await session.commit()
    assert execution.stop_requested_at is not None
    return execution.stop_requested_at


async def send_stop(client: Client, execution_id: str, by: str, reason: str | None) -> bool:
    """Signal a graceful stop; False if the workflow is no longer running."""
    handle = client.get_workflow_handle(workflow_id_for(execution_id))
    try:
        await handle.signal(STOP_SIGNAL, StopInput(by=by, reason=reason))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise temporal_error(exc) from None
    return True


async def force_stop(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    execution_id: str,
    by: str,
    bound: float,
) -> tuple[str | None, bool]:
    """Cancel now; terminate if the workflow has not closed within ``bound`` seconds.

    Returns the execution's state afterwards and whether it had to be terminated.
    """
    handle = client.get_workflow_handle(workflow_id_for(execution_id))
    try:
        description = await handle.describe()
        if description.status == WorkflowExecutionStatus.RUNNING:
            await handle.cancel()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None, False
        raise temporal_error(exc) from None
    terminated = False
    if not await wait_closed(client, execution_id, bound):
        try:
            await handle.terminate(
                reason=f"force-stop by {by}: the cancel was not acknowledged in {bound:g}s"
            )
            terminated = True
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise temporal_error(exc) from None
    state = await reconcile_execution(
        client,
        sessions,
        execution_id,
        reason=f"force-stopped by {by}: terminated after {bound:g}s without acknowledgment"
        if terminated
        else None,
    )
    return state, terminated


async def wait_closed(client: Client, execution_id: str, seconds: float) -> bool:
    """Wait (a long poll on Temporal, no polling here) until the workflow closes, at most
    ``seconds``; True if it did. Follows continue-as-new to the last run."""
    handle = client.get_workflow_handle(workflow_id_for(execution_id))
    try:
        await asyncio.wait_for(_closed(handle), seconds)
        return True
    except TimeoutError:
        return False


async def _closed(handle: object) -> None:
    with contextlib.suppress(Exception):
        await handle.result()  # type: ignore[attr-defined]
        return
    # A failure of the workflow is also its end; anything else (not found) ends the wait too.


async def delete_execution(
    client: Client | None, sessions: async_sessionmaker[AsyncSession], execution: Execution
) -> None:
    """Delete a finished execution: its row, trace (cascade), journal, blobs only it uses,
    and its workflow history in Temporal."""
    if execution.status not in FINISHED:
        raise ConflictError(
            f"execution {execution.id} has not finished ({execution.status}): stop it first"
        )
    await purge(sessions, [execution.id])
    if client is not None:
        await delete_workflow_history(client, execution.workflow_id)
