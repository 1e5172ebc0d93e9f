"""Queries of issue 10's tables: groups and members, API keys, refresh tokens, the audit
log, and the group-aware lookups of shared rows. Like every repository, they never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from kasal.access import Role
from kasal.db.models import (
    ApiKey,
    AuditEvent,
    Crew,
    Execution,
    Group,
    GroupMember,
    RefreshToken,
    User,
    new_id,
    utcnow,
)
from kasal.db.repositories import FINISHED, ExecutionFilter, _insert_for, _where
from kasal.exceptions import ConflictError, NotFoundError

T = TypeVar("T")


# Statements every authenticated request (or status read) runs, built once: building a
# select with joins and loader options costs more CPU than the compiled-statement cache saves.
_USER_WITH_ROLES = (
    select(User, GroupMember.group_id, GroupMember.role)
    .outerjoin(GroupMember, GroupMember.user_id == User.id)
    .where(User.id == bindparam("user_id"))
    .order_by(GroupMember.created_at, GroupMember.group_id)
)
_KEY_WITH_USER_AND_ROLES = (
    select(ApiKey, User, GroupMember.group_id, GroupMember.role)
    .join(User, User.id == ApiKey.user_id)
    .outerjoin(GroupMember, GroupMember.user_id == User.id)
    .where(ApiKey.prefix == bindparam("prefix"))
    .order_by(GroupMember.created_at, GroupMember.group_id)
)
_EXECUTION_STATUS = (
    select(Execution)
    .options(defer(Execution.result, raiseload=True), defer(Execution.spec, raiseload=True))
    .where(Execution.id == bindparam("execution_id"))
)


class GroupRepository:
    """Groups and who belongs to them with which role."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, group_id: str) -> Group:
        """The group, or :class:`NotFoundError`."""
        group = await self.session.get(Group, group_id)
        if group is None:
            raise NotFoundError(f"group {group_id} not found")
        return group

    async def create(self, name: str, *, personal: bool = False) -> Group:
        """A new group; :class:`ConflictError` if the name is taken."""
        exists = await self.session.scalar(select(Group.id).where(Group.name == name))
        if exists is not None:
            raise ConflictError(f"a group named {name!r} exists")
        group = Group(id=new_id(), name=name, personal=personal, created_at=utcnow())
        self.session.add(group)
        await self.session.flush()
        return group

    async def ensure_personal(self, user: User) -> str:
        """The user's personal group (made, with the user as admin, if missing).

        ``INSERT ... ON CONFLICT DO NOTHING`` both times: concurrent first requests of one
        user (or replicas) all end with the same one group and membership, none fails.
        """
        name = f"personal:{user.email}"
        insert = _insert_for(self.session)
        await self.session.execute(
            insert(Group)
            .values(id=new_id(), name=name, personal=True, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[Group.name])
        )
        group_id = await self.session.scalar(select(Group.id).where(Group.name == name))
        assert group_id is not None
        await self.session.execute(
            insert(GroupMember)
            .values(group_id=group_id, user_id=user.id, role=Role.ADMIN.label, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[GroupMember.group_id, GroupMember.user_id])
        )
        return group_id

    async def roles_of(self, user_id: str) -> list[tuple[str, Role]]:
        """The user's (group id, role) pairs, oldest membership first (the default group)."""
        query = (
            select(GroupMember.group_id, GroupMember.role)
            .where(GroupMember.user_id == user_id)
            .order_by(GroupMember.created_at, GroupMember.group_id)
        )
        return [(g, Role.parse(r)) for g, r in (await self.session.execute(query)).all()]

    async def user_with_roles(self, user_id: str) -> tuple[User | None, list[tuple[str, Role]]]:
        """The user and their (group id, role) pairs as :meth:`roles_of` orders them, in one
        statement (the read every authenticated request makes)."""
        rows = (await self.session.execute(_USER_WITH_ROLES, {"user_id": user_id})).all()
        if not rows:
            return None, []
        return rows[0][0], [(g, Role.parse(r)) for _, g, r in rows if g is not None]

    async def set_member(self, group_id: str, user_id: str, role: Role) -> str | None:
        """Add ``user_id`` to the group or change their role; the previous role, if any."""
        member = await self.session.get(GroupMember, (group_id, user_id))
        if member is None:
            self.session.add(
                GroupMember(
                    group_id=group_id, user_id=user_id, role=role.label, created_at=utcnow()
                )
            )
            await self.session.flush()
            return None
        before = member.role
        member.role = role.label
        await self.session.flush()
        return before

    async def remove_member(self, group_id: str, user_id: str) -> str:
        """Take ``user_id`` out of the group; their former role."""
        member = await self.session.get(GroupMember, (group_id, user_id))
        if member is None:
            raise NotFoundError(f"user {user_id} is not in group {group_id}")
        before = member.role
        await self.session.delete(member)
        await self.session.flush()
        return before

    async def members(self, group_id: str) -> Sequence[tuple[GroupMember, User]]:
        """The group's members with their user rows."""
        query = (
            select(GroupMember, User)
            .join(User, User.id == GroupMember.user_id)
            .where(GroupMember.group_id == group_id)
            .order_by(GroupMember.created_at)
        )
        return [(m, u) for m, u in (await self.session.execute(query)).all()]

    async def many(self, group_ids: list[str]) -> Sequence[Group]:
        """These groups, by name."""
        query = select(Group).where(Group.id.in_(group_ids)).order_by(Group.name)
        return (await self.session.scalars(query)).all()


class ApiKeyRepository:
    """API keys, found by their prefix."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: ApiKey) -> ApiKey:
        """Store a new key row (the caller filled it in)."""
        self.session.add(key)
        await self.session.flush()
        return key

    async def by_prefix(self, prefix: str) -> ApiKey | None:
        """The key with this prefix, if any."""
        return (await self.session.scalars(select(ApiKey).where(ApiKey.prefix == prefix))).first()

    async def with_user_and_roles(
        self, prefix: str
    ) -> tuple[ApiKey, User, list[tuple[str, Role]]] | None:
        """The key with this prefix, its user and the user's (group id, role) pairs (as
        :meth:`GroupRepository.roles_of` orders them), in one statement; None if no such
        key (or user)."""
        rows = (await self.session.execute(_KEY_WITH_USER_AND_ROLES, {"prefix": prefix})).all()
        if not rows:
            return None
        pairs = [(g, Role.parse(r)) for _, _, g, r in rows if g is not None]
        return rows[0][0], rows[0][1], pairs

    async def of_user(self, user_id: str) -> Sequence[ApiKey]:
        """The user's keys, newest first."""
        query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
        return (await self.session.scalars(query)).all()

    async def touch(self, key_id: str, when: datetime) -> None:
        """Record a use (one statement; no row lock held for the request)."""
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(last_used_at=when)
            .execution_options(synchronize_session=False)
        )


class RefreshTokenRepository:
    """Refresh tokens, found by their hash."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: RefreshToken) -> None:
        """Store a new token row."""
        self.session.add(token)
        await self.session.flush()

    async def by_hash(self, token_hash: str) -> RefreshToken | None:
        """The token with this hash, if any."""
        query = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        return (await self.session.scalars(query)).first()

    async def mark_used(self, token_id: str, when: datetime) -> bool:
        """Mark an unused token used; False if another request used it first (a replay)."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
            .values(used_at=when)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def revoke_family(self, family: str, when: datetime) -> None:
        """Revoke every token of one sign-in."""
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=when)
            .execution_options(synchronize_session=False)
        )


class AuditRepository:
    """The append-only audit log."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(self, **values: Any) -> None:
        """Add one entry."""
        self.session.add(AuditEvent(at=utcnow(), **values))
        await self.session.flush()

    async def page(
        self,
        *,
        group_ids: list[str] | None,
        actor_user_id: str | None = None,
        action: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        offset: int,
        limit: int,
    ) -> tuple[Sequence[AuditEvent], int]:
        """Entries, newest first; ``group_ids`` None means every entry (platform admins).

        A group admin also sees the entries their own actions left with no group.
        """
        where: list[Any] = []
        if group_ids is not None:
            where.append(AuditEvent.group_id.in_(group_ids))
        if actor_user_id is not None:
            where.append(AuditEvent.actor_user_id == actor_user_id)
        if action is not None:
            where.append(AuditEvent.action == action)
        if target_id is not None:
            where.append(AuditEvent.target_id == target_id)
        if since is not None:
            where.append(AuditEvent.at >= since)
        counted = select(func.count()).select_from(AuditEvent).where(*where)
        total = await self.session.scalar(counted)
        query = (
            select(AuditEvent)
            .where(*where)
            .order_by(AuditEvent.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all(), int(total or 0)


def _visible(model: Any, group_ids: list[str], owner_id: str | None) -> Any:
    """Rows of these groups, and (no group) rows of this owner."""
    clauses = [model.group_id.in_(group_ids)] if group_ids else []
    if owner_id is not None:
        clauses.append(and_(model.group_id.is_(None), model.owner_id == owner_id))
    return or_(*clauses) if clauses else model.id.is_(None)


class SharedRows:
    """Lookups of rows by id alone (the caller authorizes with :func:`kasal.access.authorize`)
    and listings limited to what a caller may see."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def crew(self, crew_id: str) -> Crew | None:
        """The crew with this id, whoever's it is."""
        return await self.session.get(Crew, crew_id)

    async def execution(self, execution_id: str, *, status_only: bool = False) -> Execution | None:
        """The execution with this id, whoever's it is. ``status_only`` leaves out the
        columns a status read does not need (``result``, which can be large, and ``spec``):
        reading them then raises rather than loading them behind the caller's back."""
        if not status_only:
            return await self.session.get(Execution, execution_id)
        found = await self.session.execute(_EXECUTION_STATUS, {"execution_id": execution_id})
        return found.scalar_one_or_none()

    async def page(
        self,
        model: type[T],
        group_ids: list[str],
        owner_id: str | None,
        *,
        offset: int,
        limit: int,
        where: Sequence[Any] = (),
    ) -> tuple[Sequence[T], int]:
        """A page of the rows of ``model`` (a table with ``group_id``, ``owner_id`` and
        ``created_at``: schedules, webhook subscriptions, ...) visible to a caller, newest
        first, and how many there are."""
        table: Any = model
        clauses = [_visible(table, group_ids, owner_id), *where]
        total = await self.session.scalar(select(func.count()).select_from(table).where(*clauses))
        query = (
            select(table)
            .where(*clauses)
            .order_by(table.created_at.desc(), table.id)
            .offset(offset)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all(), int(total or 0)

    async def crews(
        self, group_ids: list[str], owner_id: str | None, *, offset: int, limit: int
    ) -> tuple[Sequence[Crew], int]:
        """A page of the crews visible to a caller, newest first."""
        where = _visible(Crew, group_ids, owner_id)
        total = await self.session.scalar(select(func.count()).select_from(Crew).where(where))
        query = (
            select(Crew)
            .where(where)
            .order_by(Crew.created_at.desc(), Crew.id)
            .offset(offset)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all(), int(total or 0)

    async def executions(
        self,
        group_ids: list[str],
        owner_id: str | None,
        *,
        status: str | None = None,
        crew_id: str | None = None,
        offset: int,
        limit: int,
        started_by: str | None = None,
        filters: ExecutionFilter | None = None,
    ) -> tuple[Sequence[Execution], int]:
        """A page of the executions visible to a caller, newest first: by status, crew,
        the user who started them (``started_by``) and ``filters``."""
        where = [
            _visible(Execution, group_ids, owner_id),
            *_where(started_by, status, crew_id, filters),
        ]
        total = await self.session.scalar(select(func.count()).select_from(Execution).where(*where))
        query = (
            select(Execution)
            .where(*where)
            .order_by(Execution.created_at.desc(), Execution.id)
            .offset(offset)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all(), int(total or 0)

    async def execution_counts(
        self,
        group_ids: list[str],
        owner_id: str | None,
        *,
        crew_id: str | None = None,
        started_by: str | None = None,
        filters: ExecutionFilter | None = None,
    ) -> dict[str, int]:
        """How many executions visible to a caller are in each state (none: left out)."""
        where = [
            _visible(Execution, group_ids, owner_id),
            *_where(started_by, None, crew_id, filters),
        ]
        query = select(Execution.status, func.count()).where(*where).group_by(Execution.status)
        return {state: int(n) for state, n in (await self.session.execute(query)).all()}

    async def running_in_group(self, group_id: str) -> int:
        """How many of the group's executions have not finished."""
        query = (
            select(func.count())
            .select_from(Execution)
            .where(Execution.group_id == group_id, Execution.status.not_in(FINISHED))
        )
        return int(await self.session.scalar(query) or 0)

    async def lock_group(self, group_id: str) -> None:
        """Hold the group's row until the transaction ends (PostgreSQL), so quota checks of
        concurrent starts in one group, on any replica, happen one after the other."""
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                select(Group.id).where(Group.id == group_id).with_for_update()
            )
