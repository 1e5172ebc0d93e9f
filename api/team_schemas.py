"""Request and response bodies of issue 10: API keys, refresh, groups, the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import StrictInput

Scope = Literal["read", "run", "admin"]
RoleName = Literal["admin", "editor", "operator", "viewer"]


class RefreshInput(StrictInput):
    """A refresh token from login or the previous refresh."""

    refresh_token: str = Field(min_length=1, max_length=200)


class ApiKeyCreate(StrictInput):
    """A new API key: what it may do (scopes), where (group), until when."""

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    #: Default: the caller's current group.
    group_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    # Not strict: JSON has no datetime type, an ISO 8601 string is what clients send.
    expires_at: datetime | None = Field(default=None, strict=False)
    #: Shorthand for ``expires_at``: days from now.
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    """A key as listed: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    group_id: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A key just made: ``key`` is shown this once and never again."""

    key: str


class GroupCreate(StrictInput):
    """A new group."""

    name: str = Field(min_length=1, max_length=200)


class GroupOut(BaseModel):
    """A group, and the caller's role in it."""

    id: str
    name: str
    personal: bool
    role: RoleName | None = None


class MemberIn(StrictInput):
    """Add a user to a group, or change their role."""

    user_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    email: str | None = Field(default=None, max_length=320)
    role: RoleName


class MemberOut(BaseModel):
    """A member of a group."""

    user_id: str
    email: str
    role: RoleName


class AuditOut(BaseModel):
    """One audit entry: who, what, when, from where, ids before and after."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_user_id: str | None
    actor_email: str | None
    actor_key_id: str | None
    group_id: str | None
    action: str
    method: str
    path: str
    status_code: int
    target_type: str | None
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    address: str | None
