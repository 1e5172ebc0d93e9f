"""Activities of operations: a scheduled run's execution row, webhook deliveries, retention."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import (
    DELIVER_WEBHOOK,
    PREPARE_SCHEDULED_RUN,
    PURGE_EXPIRED,
    DeliverWebhookInput,
    DeliverWebhookResult,
    PreparedRun,
    PrepareRunInput,
    PurgeInput,
    PurgeResult,
)
from kasal.client import delete_workflow_history
from kasal.constants import workflow_id_for
from kasal.db.models import (
    Crew,
    Execution,
    Schedule,
    User,
    WebhookDelivery,
    WebhookSubscription,
    new_id,
)
from kasal.db.purge import expired, purge
from kasal.exceptions import KasalError
from kasal.execution import ExecutionState
from kasal.settings import Settings, get_settings
from kasal.spec import CrewSpec
from kasal.webhooks import body_bytes, check_target, sign, targets_for

log = logging.getLogger(__name__)

#: Seconds a receiver has to answer one delivery.
DELIVERY_TIMEOUT = 10.0


class OperationsActivities:
    """Activities that need the app database (and, for webhooks, an HTTP client)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings | None = None
    ) -> None:
        self.sessions = sessions
        self.settings = settings or get_settings()

    @activity.defn(name=PREPARE_SCHEDULED_RUN)
    async def prepare_scheduled_run(self, data: PrepareRunInput) -> PreparedRun:
        """Write the run's execution row (once: retries find it) and say what it runs.

        A schedule with a database row runs what the row says now (its crew's current spec,
        its inputs, its owner); one without runs what its action carries.
        """
        run = data.run
        async with self.sessions() as session, session.begin():
            row = await session.get(Schedule, run.schedule_id)
            crew_id, spec_data, inputs, owner = run.crew_id, run.spec, run.inputs, run.owner
            group_id: str | None = None
            if row is not None:
                crew_id, spec_data, inputs, owner = row.crew_id, row.spec, row.inputs, row.owner_id
                # The run belongs to the schedule's group: its members see it (issue 10).
                group_id = row.group_id
            if crew_id is not None:
                crew = await session.get(Crew, crew_id)
                if crew is None:
                    raise ApplicationError(
                        f"the schedule's crew {crew_id} no longer exists",
                        type="crew_gone",
                        non_retryable=True,
                    )
                spec_data = crew.spec
            if spec_data is None:
                return PreparedRun(skip=True)
            try:
                spec = CrewSpec.from_data(spec_data)
                spec.interpolated(inputs)
            except KasalError as exc:
                raise ApplicationError(exc.message, type=exc.code, non_retryable=True) from None
            known = owner is not None and await session.get(User, owner) is not None
            owner_id = owner if known else None
            if await session.get(Execution, data.execution_id) is None:
                session.add(
                    Execution(
                        id=data.execution_id,
                        workflow_id=workflow_id_for(data.execution_id),
                        owner_id=owner_id,
                        group_id=group_id,
                        crew_id=crew_id,
                        crew_name=spec.name,
                        status=ExecutionState.PENDING.value,
                        spec=spec.model_dump(mode="json"),
                        inputs=inputs,
                        schedule_id=run.schedule_id,
                    )
                )
            webhooks = await targets_for(
                session, owner_id, crew_id, run.schedule_id, group_id=group_id
            )
        return PreparedRun(
            spec=spec, inputs=inputs, crew_id=crew_id, owner=owner, webhooks=webhooks
        )

    @activity.defn(name=DELIVER_WEBHOOK)
    async def deliver_webhook(self, data: DeliverWebhookInput) -> DeliverWebhookResult:
        """POST one event to one subscription, signed; every attempt is logged. Anything but
        a 2xx raises, and Temporal retries with backoff: an outage delays, never loses."""
        attempt = activity.info().attempt
        async with self.sessions() as session:
            subscription = await session.get(WebhookSubscription, data.subscription_id)
        if subscription is None or not subscription.active:
            return DeliverWebhookResult(skipped="the subscription is gone or disabled")
        status_code: int | None = None
        error: str | None = None
        try:
            await check_target(subscription.url, self.settings.webhook_allow_private)
        except KasalError as exc:
            await self._log(data, attempt, None, exc.message, False)
            raise ApplicationError(exc.message, type="webhook_target", non_retryable=True) from None
        body = body_bytes(data.payload)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "Kasal-Webhooks/1",
            "webhook-id": data.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(subscription.secret, data.event_id, timestamp, body),
        }
        # Logged before it is sent: an attempt whose worker dies mid-flight stays in the log
        # (no status) rather than vanishing from it.
        delivery_id = await self._log(data, attempt, None, "sent; no answer recorded", False)
        beat = asyncio.create_task(_heartbeat())
        try:
            async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT, follow_redirects=False) as http:
                response = await http.post(subscription.url, content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"the receiver answered {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            beat.cancel()
        await self._settle(delivery_id, status_code, error)
        if error is not None:
            raise ApplicationError(error, type="webhook_failed")
        return DeliverWebhookResult(status_code=status_code)

    async def _settle(
        self, delivery_id: str | None, status_code: int | None, error: str | None
    ) -> None:
        if delivery_id is None:
            return
        try:
            async with self.sessions() as session, session.begin():
                row = await session.get(WebhookDelivery, delivery_id)
                if row is not None:
                    row.status_code = status_code
                    row.error = error
                    row.succeeded = error is None
        except Exception as exc:  # the log must never turn a delivery into a failure
            log.warning("could not log a webhook delivery: %s", exc)

    async def _log(
        self,
        data: DeliverWebhookInput,
        attempt: int,
        status_code: int | None,
        error: str | None,
        succeeded: bool,
    ) -> str | None:
        delivery_id = new_id()
        try:
            async with self.sessions() as session, session.begin():
                session.add(
                    WebhookDelivery(
                        id=delivery_id,
                        subscription_id=data.subscription_id,
                        event_id=data.event_id,
                        event_type=data.event_type,
                        execution_id=data.execution_id,
                        payload=data.payload,
                        attempt=attempt,
                        status_code=status_code,
                        error=error,
                        succeeded=succeeded,
                    )
                )
        except IntegrityError:
            return None  # the subscription was deleted meanwhile
        except Exception as exc:  # the log must never turn a delivery into a failure
            log.warning("could not log a webhook delivery: %s", exc)
            return None
        return delivery_id

    @activity.defn(name=PURGE_EXPIRED)
    async def purge_expired(self, data: PurgeInput) -> PurgeResult:
        """Delete finished executions that ended more than ``retention_days`` ago, with
        their traces, journals, blobs and Temporal histories."""
        before = datetime.now(UTC) - timedelta(days=data.retention_days)
        total = 0
        while ids := await expired(self.sessions, before):
            total += await purge(self.sessions, ids)
            client = activity.client()
            for execution_id in ids:
                await delete_workflow_history(client, workflow_id_for(execution_id))
            activity.heartbeat(total)
        if total:
            log.info("retention: purged %d executions that ended before %s", total, before)
        return PurgeResult(purged=total)


async def _heartbeat(every: float = 1.0) -> None:
    """Heartbeat while a delivery waits for its receiver: a worker that dies mid-delivery is
    noticed within the heartbeat timeout, not the start-to-close timeout."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)
