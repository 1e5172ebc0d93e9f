"""The ownership check every route uses: load a shared row, then :func:`kasal.access.authorize`.

Routes call :func:`crew_for` / :func:`execution_for`, or, for any other table that carries
``group_id`` and ``owner_id`` (schedules, webhooks, ...), :func:`authorized` on the row they
loaded. Outside the row's group the answer is 404, as for a row that does not exist.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from kasal.access import Principal, Role, authorize
from kasal.db.models import Crew, Execution
from kasal.db.teams import SharedRows
from kasal.exceptions import NotFoundError, PermissionDeniedError


class SharedRow(Protocol):
    """A row people share: it belongs to a group (and was made by an owner). Read-only
    members, so rows whose owner is never None (crews, schedules) fit too."""

    @property
    def id(self) -> Any: ...

    @property
    def group_id(self) -> str | None: ...

    @property
    def owner_id(self) -> str | None: ...


R = TypeVar("R", bound=SharedRow)


def authorized(principal: Principal, row: R | None, need: Role, what: str, ident: str) -> R:
    """``row`` if the caller may act on it with ``need``; 404 if it is missing or in a group
    the caller is not in; 403 if their role there is too small."""
    if row is None:
        raise NotFoundError(f"{what} {ident} not found")
    authorize(
        principal,
        group_id=row.group_id,
        owner_id=row.owner_id,
        need=need,
        what=what,
        ident=ident,
    )
    return row


async def crew_for(
    session: AsyncSession, principal: Principal, crew_id: str, need: Role = Role.VIEWER
) -> Crew:
    """The crew, if the caller may act on it with ``need``."""
    return authorized(principal, await SharedRows(session).crew(crew_id), need, "crew", crew_id)


async def execution_for(
    session: AsyncSession,
    principal: Principal,
    execution_id: str,
    need: Role = Role.VIEWER,
    *,
    status_only: bool = False,
) -> Execution:
    """The execution, if the caller may act on it with ``need`` (``status_only``: without
    its result and spec, see :meth:`SharedRows.execution`)."""
    row = await SharedRows(session).execution(execution_id, status_only=status_only)
    return authorized(principal, row, need, "execution", execution_id)


def group_for_new(principal: Principal, need: Role, group_id: str | None = None) -> str:
    """The group a new row goes into (``group_id``, else the caller's current group), if the
    caller's role there is at least ``need``."""
    target = group_id or principal.group_id
    role = principal.role_in(target)
    if target is None or role is None:
        raise NotFoundError(f"group {target} not found")
    if role < need:
        raise PermissionDeniedError(
            f"this needs the {need.label} role in the group; you act as {role.label}",
            details={"needed": need.label, "role": role.label},
        )
    return target
