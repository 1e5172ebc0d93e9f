"""The audit log: one append-only row per mutating request (who, what, when, from where,
the ids before and after), written by :class:`AuditMiddleware` before the response leaves.

Every POST, PUT, PATCH and DELETE is recorded, including refused ones (their status code
says so), and including routes that say nothing about themselves: those are named by
method and route template, their target by the path's id. Routes that know more call
:func:`note` (an action name, the target, ids before and after).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kasal.db.teams import AuditRepository

log = logging.getLogger(__name__)

MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class AuditNote:
    """What a route says about its mutation."""

    action: str
    target_type: str | None = None
    target_id: str | None = None
    group_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    actor_email: str | None = None
    actor_user_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def note(
    request: Request,
    action: str,
    target_type: str | None = None,
    target_id: str | None = None,
    *,
    group_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor_email: str | None = None,
    actor_user_id: str | None = None,
) -> None:
    """Describe this request's mutation for its audit entry."""
    request.state.audit = AuditNote(
        action=action,
        target_type=target_type,
        target_id=target_id,
        group_id=group_id,
        before=before,
        after=after,
        actor_email=actor_email,
        actor_user_id=actor_user_id,
    )


class AuditMiddleware:
    """Write the audit entry of each mutating request, in its own transaction, before the
    response starts (so a client that got its answer finds the entry)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATIONS:
            await self.app(scope, receive, send)
            return
        written = False

        async def send_audited(message: Message) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and not written:
                written = True
                await self._write(scope, message["status"])
            await send(message)

        await self.app(scope, receive, send_audited)

    async def _write(self, scope: Scope, status_code: int) -> None:
        app = scope.get("app")
        kasal = getattr(getattr(app, "state", None), "kasal", None)
        if kasal is None:
            return
        state = scope.get("state") or {}
        principal = state.get("principal")
        audit: AuditNote | None = state.get("audit")
        from api.observability import route_template

        template = route_template(scope) or scope.get("path", "")
        params = scope.get("path_params") or {}
        target_id = audit.target_id if audit else None
        if target_id is None and params:
            target_id = str(next(iter(params.values())))
        client = scope.get("client")
        values: dict[str, Any] = {
            "actor_user_id": (audit.actor_user_id if audit else None)
            or (principal.user_id if principal else None),
            "actor_email": (audit.actor_email if audit else None)
            or (principal.email if principal else None),
            "actor_key_id": principal.key_id if principal else None,
            "group_id": (audit.group_id if audit else None)
            or (principal.group_id if principal else None),
            "action": audit.action if audit else f"{scope['method']} {template}",
            "method": scope["method"],
            "path": scope.get("path", "")[:500],
            "status_code": status_code,
            "target_type": audit.target_type if audit else None,
            "target_id": target_id,
            "before": audit.before if audit else None,
            "after": audit.after if audit else None,
            "address": client[0] if client else None,
        }
        try:
            async with kasal.sessions() as session, session.begin():
                await AuditRepository(session).append(**values)
        except Exception:
            # The mutation has happened; losing its entry is an operator's problem to see.
            log.exception("could not write the audit entry of %s %s", scope["method"], template)
