"""API keys and refresh tokens: made, shown once, kept only as SHA-256 digests, checked.

Both are 32 random bytes, so a fast digest is enough (a slow password hash protects
guessable secrets; nothing guesses these). Lookups go by a non-secret part (the key's
prefix, the token's digest) and compare digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from kasal.access import SCOPES, Principal, Role, scope_cap
from kasal.db.models import ApiKey, RefreshToken, User, new_id, utcnow
from kasal.db.repositories import UserRepository
from kasal.db.teams import ApiKeyRepository, GroupRepository, RefreshTokenRepository
from kasal.exceptions import AuthError, InvalidSpecError, NotFoundError
from kasal.settings import Settings

#: Every API key starts with this, so secret scanners and people recognise one.
KEY_PREFIX = "kasal_"
#: The non-secret start of a key that names it: ``kasal_`` and 8 hex characters.
PREFIX_LENGTH = len(KEY_PREFIX) + 8
#: Update ``last_used_at`` at most this often per key (not a write per request).
TOUCH_EVERY = timedelta(seconds=30)


def digest(secret: str) -> str:
    """The stored form of a key or token."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(credential: str) -> bool:
    """True if ``credential`` has an API key's shape (else it is tried as a JWT)."""
    return credential.startswith(KEY_PREFIX)


@dataclass(frozen=True)
class NewKey:
    """A key just made: the row, and the secret, shown this once."""

    row: ApiKey
    secret: str


async def create_api_key(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    scopes: list[str],
    group_id: str,
    expires_at: datetime | None,
) -> NewKey:
    """A key for the caller in ``group_id``: its scopes cannot exceed the caller's role
    there (a viewer cannot mint a ``run`` key)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidSpecError(
            f"scopes must be some of {sorted(SCOPES)}; got {scopes}", field="scopes"
        )
    role = principal.role_in(group_id)
    if role is None:
        raise NotFoundError(f"group {group_id} not found")
    if scope_cap(scopes) > role:
        raise InvalidSpecError(
            f"your role in this group is {role.label}: a key cannot do more than you",
            field="scopes",
        )
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidSpecError("expires_at is in the past", field="expires_at")
    prefix = KEY_PREFIX + secrets.token_hex(4)
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=new_id(),
        prefix=prefix,
        key_hash=digest(secret),
        name=name,
        user_id=principal.user_id,
        group_id=group_id,
        scopes=sorted(set(scopes)),
        created_at=utcnow(),
        expires_at=expires_at,
    )
    await ApiKeyRepository(session).add(row)
    return NewKey(row=row, secret=secret)


async def principal_for_key(session: AsyncSession, secret: str) -> tuple[Principal, User]:
    """The principal an API key acts as; :class:`AuthError` for an unknown, revoked or
    expired key, or one whose user is disabled. Checked on every request, so a revocation
    holds at once."""
    # ``kasal_`` + 8 hex characters, then ``_`` and the random part (which may itself
    # contain ``_``): the prefix is found by length, never by splitting.
    prefix, separator = secret[:PREFIX_LENGTH], secret[PREFIX_LENGTH : PREFIX_LENGTH + 1]
    found = separator == "_" and len(secret) > PREFIX_LENGTH + 1
    # The key, its user and their roles in one statement: a status poll through a key
    # makes this read on every request.
    loaded = await ApiKeyRepository(session).with_user_and_roles(prefix) if found else None
    if loaded is None or not hmac.compare_digest(loaded[0].key_hash, digest(secret)):
        raise AuthError("the API key is invalid")
    row, user, pairs = loaded
    now = utcnow()
    if row.revoked_at is not None:
        raise AuthError("the API key was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthError("the API key has expired")
    if not user.is_active:
        raise AuthError("the API key is invalid")
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        await ApiKeyRepository(session).touch(row.id, now)
    principal = Principal(
        user_id=user.id,
        email=user.email,
        is_superuser=user.is_admin,
        roles=dict(pairs),
        group_id=row.group_id,
        key_id=row.id,
        cap=scope_cap(list(row.scopes)),
        via="api_key",
    )
    return principal, user


async def principal_for_user(
    session: AsyncSession,
    user: User,
    *,
    group_id: str | None,
    via: str,
    roles: list[tuple[str, Role]] | None = None,
) -> Principal:
    """The principal of a signed-in person, acting in ``group_id`` (the ``X-Kasal-Group``
    header; default: their oldest membership, their personal group unless they left it).
    ``roles``: the user's (group, role) pairs if already read with the user."""
    pairs = roles if roles else await GroupRepository(session).roles_of(user.id)
    if not pairs:  # accounts made before groups, or by hand: give them their own
        await GroupRepository(session).ensure_personal(user)
        pairs = await GroupRepository(session).roles_of(user.id)
    roles_by_group = dict(pairs)
    if group_id is not None and group_id not in roles_by_group:
        raise NotFoundError(f"group {group_id} not found")
    return Principal(
        user_id=user.id,
        email=user.email,
        is_superuser=user.is_admin,
        roles=roles_by_group,
        group_id=group_id or pairs[0][0],
        via=via,
    )


async def principal_for_token(
    session: AsyncSession, user_id: str, *, group_id: str | None
) -> tuple[Principal, User]:
    """The principal behind a valid access token's user id: the user and their roles read
    in one statement; :class:`AuthError` if the user is gone or disabled."""
    user, pairs = await GroupRepository(session).user_with_roles(user_id)
    if user is None or not user.is_active:
        raise AuthError("the access token is invalid")
    principal = await principal_for_user(session, user, group_id=group_id, via="token", roles=pairs)
    return principal, user


# -- refresh tokens -------------------------------------------------------------------------


async def issue_refresh_token(
    session: AsyncSession, user_id: str, settings: Settings, family: str | None = None
) -> str:
    """A new refresh token for ``user_id`` (a new sign-in unless ``family`` is given)."""
    secret = "kasalr_" + secrets.token_urlsafe(32)
    await RefreshTokenRepository(session).add(
        RefreshToken(
            id=new_id(),
            token_hash=digest(secret),
            family=family or new_id(),
            user_id=user_id,
            created_at=utcnow(),
            expires_at=utcnow() + timedelta(days=settings.refresh_token_days),
        )
    )
    return secret


async def rotate_refresh_token(
    session: AsyncSession, secret: str, settings: Settings
) -> tuple[User, str]:
    """Exchange a refresh token for its successor (and the user, for a new access token).

    A token presented a second time was stolen or replayed: its whole sign-in is revoked,
    so neither the thief nor the owner can go on with it.
    """
    tokens = RefreshTokenRepository(session)
    row = await tokens.by_hash(digest(secret))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise AuthError("the refresh token is invalid or expired; sign in again")
    if row.used_at is not None or not await tokens.mark_used(row.id, now):
        await tokens.revoke_family(row.family, now)
        await session.commit()  # the revocation must stand although this request fails
        raise AuthError("the refresh token was already used; this sign-in is revoked")
    user = await UserRepository(session).get(row.user_id)
    if user is None or not user.is_active:
        raise AuthError("the refresh token is invalid or expired; sign in again")
    return user, await issue_refresh_token(session, user.id, settings, family=row.family)


async def revoke_refresh_token(session: AsyncSession, secret: str) -> str | None:
    """Sign out: revoke the token's sign-in; the user id, or None for an unknown token."""
    row = await RefreshTokenRepository(session).by_hash(digest(secret))
    if row is None:
        return None
    await RefreshTokenRepository(session).revoke_family(row.family, utcnow())
    return row.user_id


__all__ = [
    "KEY_PREFIX",
    "NewKey",
    "Role",
    "create_api_key",
    "digest",
    "issue_refresh_token",
    "looks_like_key",
    "principal_for_key",
    "principal_for_token",
    "principal_for_user",
    "revoke_refresh_token",
    "rotate_refresh_token",
]
