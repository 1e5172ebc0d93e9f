"""API keys, groups and their members, and the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from api.audit import note
from api.deps import CurrentPrincipal, IdPath, Limit, Offset, SessionDep
from api.schemas import Page
from api.services.access import group_for_new
from api.services.credentials import create_api_key
from api.team_schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    AuditOut,
    GroupCreate,
    GroupOut,
    MemberIn,
    MemberOut,
)
from kasal.access import Role
from kasal.db.models import ApiKey, utcnow
from kasal.db.repositories import UserRepository
from kasal.db.teams import ApiKeyRepository, AuditRepository, GroupRepository
from kasal.exceptions import InvalidSpecError, NotFoundError, PermissionDeniedError

router = APIRouter(tags=["teams"])


# -- API keys -------------------------------------------------------------------------------


@router.post("/keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_key(
    body: ApiKeyCreate, request: Request, principal: CurrentPrincipal, session: SessionDep
):
    """Make an API key for a program. The response holds the key: it is shown this once.

    Its scopes cannot exceed your role in its group; an API key may make keys only with
    the admin scope.
    """
    if principal.key_id is not None and principal.cap < Role.ADMIN:
        raise PermissionDeniedError("only an API key with the admin scope may make keys")
    expires_at = body.expires_at
    if body.expires_in_days is not None:
        if expires_at is not None:
            raise InvalidSpecError("give expires_at or expires_in_days, not both")
        expires_at = utcnow() + timedelta(days=body.expires_in_days)
    made = await create_api_key(
        session,
        principal,
        name=body.name,
        scopes=list(body.scopes),
        group_id=body.group_id or principal.group_id or "",
        expires_at=expires_at,
    )
    note(
        request,
        "api_key.create",
        "api_key",
        made.row.id,
        group_id=made.row.group_id,
        after={"key_id": made.row.id, "prefix": made.row.prefix, "scopes": made.row.scopes},
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(made.row).model_dump(), key=made.secret)


@router.get("/keys", response_model=list[ApiKeyOut])
async def list_keys(principal: CurrentPrincipal, session: SessionDep):
    """Your API keys (never their secrets)."""
    return await ApiKeyRepository(session).of_user(principal.user_id)


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(
    key_id: IdPath, request: Request, principal: CurrentPrincipal, session: SessionDep
) -> Response:
    """Revoke a key at once: its next request gets 401. Yours, or any key of a group you
    administer."""
    key = await session.get(ApiKey, key_id)
    if key is None or not (
        key.user_id == principal.user_id
        and principal.key_id is None
        or principal.can(Role.ADMIN, key.group_id)
    ):
        raise NotFoundError(f"API key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    note(
        request,
        "api_key.revoke",
        "api_key",
        key.id,
        group_id=key.group_id,
        before={"key_id": key.id, "prefix": key.prefix},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- groups ---------------------------------------------------------------------------------


@router.get("/groups", response_model=list[GroupOut])
async def list_groups(principal: CurrentPrincipal, session: SessionDep):
    """The groups you belong to, with your role in each."""
    groups = await GroupRepository(session).many(principal.visible_groups())
    out = []
    for group in groups:
        role = principal.role_in(group.id)
        out.append(
            GroupOut(
                id=group.id,
                name=group.name,
                personal=group.personal,
                role=role.label if role else None,  # type: ignore[arg-type]
            )
        )
    return out


@router.post("/groups", response_model=GroupOut, status_code=status.HTTP_201_CREATED)
async def create_group(
    body: GroupCreate, request: Request, principal: CurrentPrincipal, session: SessionDep
):
    """Make a group (platform admins); you become its admin."""
    if not principal.is_superuser or principal.cap < Role.ADMIN:
        raise PermissionDeniedError("only an admin may make groups")
    groups = GroupRepository(session)
    group = await groups.create(body.name)
    await groups.set_member(group.id, principal.user_id, Role.ADMIN)
    note(request, "group.create", "group", group.id, group_id=group.id, after={"name": group.name})
    return GroupOut(id=group.id, name=group.name, personal=False, role="admin")


@router.get("/groups/{group_id}/members", response_model=list[MemberOut])
async def list_members(group_id: IdPath, principal: CurrentPrincipal, session: SessionDep):
    """A group's members and roles (any member may look)."""
    if principal.role_in(group_id) is None:
        raise NotFoundError(f"group {group_id} not found")
    pairs = await GroupRepository(session).members(group_id)
    return [MemberOut(user_id=u.id, email=u.email, role=m.role) for m, u in pairs]  # type: ignore[arg-type]


@router.put("/groups/{group_id}/members", response_model=MemberOut)
async def set_member(
    group_id: IdPath,
    body: MemberIn,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
):
    """Add a user (by id or email) to the group, or change their role (group admins)."""
    group_for_new(principal, Role.ADMIN, group_id)
    users = UserRepository(session)
    user = await users.get(body.user_id) if body.user_id else None
    if user is None and body.email:
        user = await users.get_by_email(body.email)
    if user is None:
        raise NotFoundError("no such user")
    before = await GroupRepository(session).set_member(group_id, user.id, Role.parse(body.role))
    note(
        request,
        "group.member.set",
        "user",
        user.id,
        group_id=group_id,
        before={"role": before} if before else None,
        after={"role": body.role},
    )
    return MemberOut(user_id=user.id, email=user.email, role=body.role)


@router.delete("/groups/{group_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(
    group_id: IdPath,
    user_id: IdPath,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
) -> Response:
    """Take a user out of the group (group admins)."""
    group_for_new(principal, Role.ADMIN, group_id)
    before = await GroupRepository(session).remove_member(group_id, user_id)
    note(
        request, "group.member.remove", "user", user_id, group_id=group_id, before={"role": before}
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- audit ----------------------------------------------------------------------------------

ActorFilter = Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")]


@router.get("/audit", response_model=Page[AuditOut])
async def audit_log(
    principal: CurrentPrincipal,
    session: SessionDep,
    actor: ActorFilter = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    target_id: Annotated[str | None, Query(max_length=255)] = None,
    since: datetime | None = None,
    offset: Offset = 0,
    limit: Limit = 50,
):
    """The audit log, newest first: platform admins see every entry, group admins the
    entries of the groups they administer."""
    if principal.cap < Role.ADMIN:
        raise PermissionDeniedError("reading the audit log needs the admin scope")
    group_ids: list[str] | None = None
    if not principal.is_superuser:
        group_ids = [g for g in principal.visible_groups() if principal.can(Role.ADMIN, g)]
        if not group_ids:
            raise PermissionDeniedError("only admins may read the audit log")
    items, total = await AuditRepository(session).page(
        group_ids=group_ids,
        actor_user_id=actor,
        action=action,
        target_id=target_id,
        since=since,
        offset=offset,
        limit=limit,
    )
    return Page[AuditOut](
        items=[AuditOut.model_validate(e) for e in items], total=total, offset=offset, limit=limit
    )
