"""Webhooks the Standard Webhooks way (https://www.standardwebhooks.com).

Every delivery carries ``webhook-id`` (the event's stable id: the same on every retry and
redelivery, so receivers de-duplicate by it), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, keyed with the
subscription's secret ``whsec_<base64 key>`` (shown once, when the subscription is made).

Targets on private, loopback, link-local or otherwise non-public addresses are refused
unless ``KASAL_WEBHOOK_ALLOW_PRIVATE`` is set: checked when a subscription is made and again
at every delivery (a name may resolve elsewhere later).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from kasal.db.models import WebhookSubscription
from kasal.exceptions import InvalidRequestError
from kasal.execution import EventType, WebhookTarget

#: Events a subscription may ask for.
WEBHOOK_EVENTS = (
    EventType.EXECUTION_STARTED.value,
    EventType.EXECUTION_COMPLETED.value,
    EventType.EXECUTION_FAILED.value,
    EventType.EXECUTION_CANCELLED.value,
    EventType.EXECUTION_STOPPED.value,
    EventType.HUMAN_INPUT_REQUESTED.value,
    EventType.TASK_STARTED.value,
    EventType.TASK_COMPLETED.value,
    EventType.TASK_FAILED.value,
    EventType.STOP_REQUESTED.value,
)
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The body sent for a payload: compact JSON, keys sorted (the same on every retry)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does: check the signature (any of the space-separated ones) and that
    the timestamp is recent."""
    import time

    lower = {k.lower(): v for k, v in headers.items()}
    try:
        event_id, timestamp = lower["webhook-id"], int(lower["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, event_id, timestamp, body)
    offered = lower.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, sig) for sig in offered)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_target(url: str, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or (unless allowed) resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            "a webhook URL must be http:// or https:// with a host", field="url"
        )
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        )
    except socket.gaierror:
        raise InvalidRequestError(f"cannot resolve {parts.hostname}", field="url") from None
    for info in infos:
        if not _public(str(info[4][0])):
            raise InvalidRequestError(
                f"{parts.hostname} resolves to a private or local address; the operator must "
                "set KASAL_WEBHOOK_ALLOW_PRIVATE to allow such targets",
                field="url",
            )


async def targets_for(
    session: AsyncSession,
    owner_id: str | None,
    crew_id: str | None = None,
    schedule_id: str | None = None,
    *,
    group_id: str | None = None,
) -> list[WebhookTarget]:
    """The active subscriptions that want events of an execution: its group's (issue 10)
    for all of the group's executions, for this crew, or for this schedule. An execution in
    no group (made outside the API) is matched by its owner's subscriptions instead."""
    if group_id is not None:
        whose: Any = WebhookSubscription.group_id == group_id
    elif owner_id is not None:
        whose = WebhookSubscription.owner_id == owner_id
    else:
        return []
    scope: list[Any] = [
        WebhookSubscription.crew_id.is_(None) & WebhookSubscription.schedule_id.is_(None)
    ]
    if crew_id is not None:
        scope.append(WebhookSubscription.crew_id == crew_id)
    if schedule_id is not None:
        scope.append(WebhookSubscription.schedule_id == schedule_id)
    rows: Sequence[WebhookSubscription] = (
        await session.scalars(
            select(WebhookSubscription).where(
                whose,
                WebhookSubscription.active.is_(True),
                or_(*scope),
            )
        )
    ).all()
    return [WebhookTarget(subscription_id=r.id, events=list(r.events)) for r in rows]
