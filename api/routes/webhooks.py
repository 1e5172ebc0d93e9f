"""Webhook subscriptions, their delivery log, and redelivery.

Deliveries are made by workers (``WebhookDelivery`` workflows started by the crew, one per
event, each subscription through a retrying activity); see :mod:`kasal.webhooks` for the
signature and the rule on private targets.

A subscription belongs to a group (issue 10): the group of its crew or schedule, else the
caller's current group; without a crew or schedule it gets the events of every execution
of its group. Viewers read subscriptions and their deliveries; editors create, delete and
redeliver.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from sqlalchemy import func, select

from api.audit import note
from api.deps import (
    CurrentPrincipal,
    IdPath,
    Limit,
    Offset,
    SessionDep,
    StateDep,
    TemporalClientDep,
)
from api.schemas import Page
from api.schemas_ops import DeliveryOut, RedeliveryOut, WebhookCreate, WebhookCreated, WebhookOut
from api.services.access import authorized, crew_for, group_for_new
from kasal.access import Principal, Role
from kasal.constants import WEBHOOK_WORKFLOW
from kasal.db.models import Schedule, WebhookDelivery, WebhookSubscription
from kasal.db.teams import SharedRows
from kasal.exceptions import InvalidRequestError, NotFoundError
from kasal.execution import WebhookDeliveryInput
from kasal.webhooks import WEBHOOK_EVENTS, check_target, new_secret

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def _get(session, principal: Principal, webhook_id: str, need: Role) -> WebhookSubscription:  # type: ignore[no-untyped-def]
    """The subscription, if the caller may act on it with ``need`` (404 outside its group)."""
    row = await session.get(WebhookSubscription, webhook_id)
    return authorized(principal, row, need, "webhook", webhook_id)


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
async def create(
    body: WebhookCreate,
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> WebhookCreated:
    """Subscribe a URL to events (editors and up); the answer holds the signing secret,
    shown this once.

    Applies to executions started after it (the crew workflow learns its subscriptions at
    start)."""
    note(http, "webhook.create", "webhook", after={"url": body.url})
    unknown = sorted(set(body.events) - set(WEBHOOK_EVENTS))
    if unknown:
        raise InvalidRequestError(
            f"unknown events {', '.join(unknown)}; known: {', '.join(WEBHOOK_EVENTS)}",
            field="events",
        )
    groups: set[str | None] = set()
    if body.crew_id is not None:
        groups.add((await crew_for(session, principal, body.crew_id, Role.EDITOR)).group_id)
    if body.schedule_id is not None:
        schedule = authorized(
            principal,
            await session.get(Schedule, body.schedule_id),
            Role.EDITOR,
            "schedule",
            body.schedule_id,
        )
        groups.add(schedule.group_id)
    if len(groups) > 1:
        raise InvalidRequestError(
            "the crew and the schedule are in different groups", field="schedule_id"
        )
    group_id = groups.pop() if groups else group_for_new(principal, Role.EDITOR)
    await check_target(body.url, state.settings.webhook_allow_private)
    row = WebhookSubscription(
        owner_id=principal.user_id,
        group_id=group_id,
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
    note(
        http,
        "webhook.create",
        "webhook",
        row.id,
        group_id=group_id,
        after={"webhook_id": row.id, "crew_id": row.crew_id, "schedule_id": row.schedule_id},
    )
    return WebhookCreated(**WebhookOut.model_validate(row).model_dump(), secret=row.secret)


@router.get("", response_model=Page[WebhookOut])
async def list_webhooks(
    principal: CurrentPrincipal, session: SessionDep, offset: Offset = 0, limit: Limit = 20
) -> Page[WebhookOut]:
    """The subscriptions of the caller's groups (without secrets), newest first."""
    rows, total = await SharedRows(session).page(
        WebhookSubscription,
        principal.visible_groups(),
        None if principal.key_id else principal.user_id,
        offset=offset,
        limit=limit,
    )
    return Page[WebhookOut](
        items=[WebhookOut.model_validate(r) for r in rows],
        total=total,
        offset=offset,
        limit=limit,
    )


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get(webhook_id: IdPath, principal: CurrentPrincipal, session: SessionDep) -> WebhookOut:
    """One subscription (without its secret)."""
    return WebhookOut.model_validate(await _get(session, principal, webhook_id, Role.VIEWER))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(
    webhook_id: IdPath, http: Request, principal: CurrentPrincipal, session: SessionDep
) -> Response:
    """Unsubscribe (editors and up): deliveries still pending for it stop at their next
    attempt."""
    note(http, "webhook.delete", "webhook", webhook_id)
    row = await _get(session, principal, webhook_id, Role.EDITOR)
    note(
        http,
        "webhook.delete",
        "webhook",
        row.id,
        group_id=row.group_id,
        before={"webhook_id": row.id, "url": row.url},
    )
    await session.delete(row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
async def deliveries(
    webhook_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[DeliveryOut]:
    """Every delivery attempt to this subscription, newest first: status code or error."""
    row = await _get(session, principal, webhook_id, Role.VIEWER)
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
    http: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    client: TemporalClientDep,
) -> RedeliveryOut:
    """Deliver that event again (editors and up; same event id and body, retried like the
    first time)."""
    note(http, "webhook.redeliver", "webhook", webhook_id)
    row = await _get(session, principal, webhook_id, Role.EDITOR)
    note(
        http,
        "webhook.redeliver",
        "webhook",
        row.id,
        group_id=row.group_id,
        after={"delivery_id": delivery_id},
    )
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
