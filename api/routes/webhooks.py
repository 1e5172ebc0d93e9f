"""Webhook subscriptions, their delivery log, and redelivery.

Deliveries are made by workers (``WebhookDelivery`` workflows started by the crew, one per
event, each subscription through a retrying activity); see :mod:`kasal.webhooks` for the
signature and the rule on private targets.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from sqlalchemy import func, select

from api.deps import CurrentUser, IdPath, Limit, Offset, SessionDep, StateDep, TemporalClientDep
from api.schemas import Page
from api.schemas_ops import DeliveryOut, RedeliveryOut, WebhookCreate, WebhookCreated, WebhookOut
from kasal.constants import WEBHOOK_WORKFLOW
from kasal.db.models import Crew, Schedule, WebhookDelivery, WebhookSubscription
from kasal.exceptions import InvalidRequestError, NotFoundError
from kasal.execution import WebhookDeliveryInput
from kasal.webhooks import WEBHOOK_EVENTS, check_target, new_secret

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def _get(session, webhook_id: str, owner_id: str) -> WebhookSubscription:  # type: ignore[no-untyped-def]
    row = await session.get(WebhookSubscription, webhook_id)
    if row is None or row.owner_id != owner_id:
        raise NotFoundError(f"webhook {webhook_id} not found")
    return row


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
async def create(
    body: WebhookCreate, user: CurrentUser, session: SessionDep, state: StateDep
) -> WebhookCreated:
    """Subscribe a URL to events; the answer holds the signing secret, shown this once.

    Applies to executions started after it (the crew workflow learns its subscriptions at
    start)."""
    unknown = sorted(set(body.events) - set(WEBHOOK_EVENTS))
    if unknown:
        raise InvalidRequestError(
            f"unknown events {', '.join(unknown)}; known: {', '.join(WEBHOOK_EVENTS)}",
            field="events",
        )
    if body.crew_id is not None:
        crew = await session.get(Crew, body.crew_id)
        if crew is None or crew.owner_id != user.id:
            raise NotFoundError(f"crew {body.crew_id} not found")
    if body.schedule_id is not None:
        schedule = await session.get(Schedule, body.schedule_id)
        if schedule is None or schedule.owner_id != user.id:
            raise NotFoundError(f"schedule {body.schedule_id} not found")
    await check_target(body.url, state.settings.webhook_allow_private)
    row = WebhookSubscription(
        owner_id=user.id,
        url=body.url,
        secret=new_secret(),
        events=sorted(set(body.events)),
        crew_id=body.crew_id,
        schedule_id=body.schedule_id,
        description=body.description,
        active=True,
    )
    session.add(row)
    await session.flush()
    return WebhookCreated(**WebhookOut.model_validate(row).model_dump(), secret=row.secret)


@router.get("", response_model=Page[WebhookOut])
async def list_webhooks(
    user: CurrentUser, session: SessionDep, offset: Offset = 0, limit: Limit = 20
) -> Page[WebhookOut]:
    """The caller's subscriptions (without secrets)."""
    where = WebhookSubscription.owner_id == user.id
    total = await session.scalar(select(func.count()).select_from(WebhookSubscription).where(where))
    rows = (
        await session.scalars(
            select(WebhookSubscription)
            .where(where)
            .order_by(WebhookSubscription.created_at.desc())
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return Page[WebhookOut](
        items=[WebhookOut.model_validate(r) for r in rows],
        total=int(total or 0),
        offset=offset,
        limit=limit,
    )


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get(webhook_id: IdPath, user: CurrentUser, session: SessionDep) -> WebhookOut:
    """One subscription (without its secret)."""
    return WebhookOut.model_validate(await _get(session, webhook_id, user.id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(webhook_id: IdPath, user: CurrentUser, session: SessionDep) -> Response:
    """Unsubscribe: deliveries still pending for it stop at their next attempt."""
    await session.delete(await _get(session, webhook_id, user.id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
async def deliveries(
    webhook_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[DeliveryOut]:
    """Every delivery attempt to this subscription, newest first: status code or error."""
    row = await _get(session, webhook_id, user.id)
    where = WebhookDelivery.subscription_id == row.id
    total = await session.scalar(select(func.count()).select_from(WebhookDelivery).where(where))
    items = (
        await session.scalars(
            select(WebhookDelivery)
            .where(where)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.attempt.desc())
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return Page[DeliveryOut](
        items=[DeliveryOut.model_validate(d) for d in items],
        total=int(total or 0),
        offset=offset,
        limit=limit,
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=RedeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
)
async def redeliver(
    webhook_id: IdPath,
    delivery_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
) -> RedeliveryOut:
    """Deliver that event again (same event id and body, retried like the first time)."""
    row = await _get(session, webhook_id, user.id)
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.subscription_id != row.id:
        raise NotFoundError(f"delivery {delivery_id} not found")
    workflow_id = f"kasal-webhook-{delivery.event_id}-redeliver-{uuid.uuid4().hex[:12]}"
    await client.start_workflow(
        WEBHOOK_WORKFLOW,
        WebhookDeliveryInput(
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            execution_id=delivery.execution_id or "",
            subscriptions=[row.id],
            payload=delivery.payload,
        ),
        id=workflow_id,
        task_queue=state.settings.task_queue,
    )
    return RedeliveryOut(
        delivery_id=delivery.id, event_id=delivery.event_id, workflow_id=workflow_id
    )
