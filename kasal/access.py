"""Who may do what: roles in groups, API-key scopes, and the one ownership check.

Every row that people share (crews, executions, and whatever later joins them: schedules,
webhooks, ...) carries ``group_id`` (and ``owner_id``). :func:`authorize` is the single rule
for all of them: a caller outside the row's group gets :class:`NotFoundError` (the row's
existence is not revealed), a member whose role is too small gets
:class:`PermissionDeniedError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from kasal.exceptions import NotFoundError, PermissionDeniedError


class Role(IntEnum):
    """Roles in a group, each allowed what the ones below it are."""

    VIEWER = 1  #: read crews, executions, traces
    OPERATOR = 2  #: + start, cancel, answer human input
    EDITOR = 3  #: + create, change and delete crews
    ADMIN = 4  #: + manage the group's members and keys, read its audit log

    @classmethod
    def parse(cls, name: str) -> Role:
        """``"editor"`` -> ``Role.EDITOR``."""
        return cls[name.upper()]

    @property
    def label(self) -> str:
        """The role's name as the API spells it."""
        return self.name.lower()


#: What each API-key scope allows at most (the key's user's role caps it too).
SCOPES: dict[str, Role] = {"read": Role.VIEWER, "run": Role.OPERATOR, "admin": Role.ADMIN}


def scope_cap(scopes: list[str]) -> Role:
    """The largest role a key with ``scopes`` may act with."""
    return max((SCOPES[s] for s in scopes if s in SCOPES), default=Role.VIEWER)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, maybe through an API key, and their roles per group."""

    user_id: str
    email: str
    #: Platform administrator: manages users and groups, reads every audit entry. Sees no
    #: group's crews or executions without being a member.
    is_superuser: bool
    #: The caller's role in each group they belong to.
    roles: Mapping[str, Role] = field(default_factory=dict)
    #: Where new crews and executions go (the ``X-Kasal-Group`` header, else the default).
    group_id: str | None = None
    #: Set when an API key authenticated the request: it acts in its own group only.
    key_id: str | None = None
    #: The most an API key's scopes allow (ADMIN for people).
    cap: Role = Role.ADMIN
    #: How the caller authenticated: password token, api_key, trusted_proxy.
    via: str = "token"

    def role_in(self, group_id: str | None) -> Role | None:
        """The caller's effective role in ``group_id`` (None: not a member)."""
        if group_id is None:
            return None
        if self.key_id is not None and group_id != self.group_id:
            return None
        role = self.roles.get(group_id)
        return None if role is None else min(role, self.cap)

    def visible_groups(self) -> list[str]:
        """The groups whose rows the caller can see."""
        if self.key_id is not None:
            return [self.group_id] if self.group_id and self.group_id in self.roles else []
        return list(self.roles)

    def can(self, need: Role, group_id: str | None) -> bool:
        """True if the caller may act with ``need`` in ``group_id``."""
        role = self.role_in(group_id)
        return role is not None and role >= need


def role_for_row(principal: Principal, group_id: str | None, owner_id: str | None) -> Role | None:
    """The caller's role over one row: through its group, or (rows from before groups, or
    from the CLI, with no group) as its owner."""
    if group_id is not None:
        return principal.role_in(group_id)
    if owner_id is not None and owner_id == principal.user_id and principal.key_id is None:
        return Role.ADMIN
    return None


def authorize(
    principal: Principal,
    *,
    group_id: str | None,
    owner_id: str | None,
    need: Role,
    what: str,
    ident: str,
) -> Role:
    """The one ownership check: the caller's role over a row, if it is at least ``need``.

    Not in the row's group: :class:`NotFoundError` ("``what`` ``ident`` not found"), exactly
    what a missing row answers. In the group with too small a role:
    :class:`PermissionDeniedError` naming the role needed.
    """
    role = role_for_row(principal, group_id, owner_id)
    if role is None:
        raise NotFoundError(f"{what} {ident} not found")
    if role < need:
        raise PermissionDeniedError(
            f"this needs the {need.label} role in the {what}'s group; you act as {role.label}"
            + (" (the API key's scopes allow no more)" if principal.key_id else ""),
            details={"needed": need.label, "role": role.label},
        )
    return role
