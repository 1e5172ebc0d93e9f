"""Request dependencies, as ``Annotated`` aliases routes declare by type."""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.requests import HTTPConnection
from fastapi.security import APIKeyHeader, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.guards import RateLimiter
from api.security import decode_access_token
from api.temporal import TemporalConnection
from kasal.access import Principal, Role
from kasal.db.models import User
from kasal.db.repositories import UserRepository
from kasal.exceptions import AuthError, PermissionDeniedError, TemporalUnavailableError
from kasal.settings import Settings


class PrincipalCache:
    """Who each access token (and ``X-Kasal-Group``) was, for ``seconds``: the principal and
    user a GET request's token resolved to, so polling does not read the user and roles
    every time. The token's signature and expiry are still checked on every request.

    Every request that may change something empties it, before it runs and after its
    commit; an entry resolved while such a request ran is not kept (``generation``). So a
    disabled user or a changed role holds at once in this process, and within ``seconds``
    in the others. API keys are not kept: their revocation and expiry are read on every
    request, wherever they were changed.
    """

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[tuple[str, str], tuple[float, Principal, User]] = {}

    def get(self, key: tuple[str, str]) -> tuple[Principal, User] | None:
        """The principal and user for ``key``, if resolved less than ``seconds`` ago."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1], entry[2]

    def put(self, key: tuple[str, str], generation: int, principal: Principal, user: User) -> None:
        """Keep what ``key`` resolved to, unless the cache was emptied since ``generation``."""
        if generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.seconds, principal, user)

    def clear(self) -> None:
        """Forget every entry, and any resolution under way."""
        self._entries.clear()
        self.generation += 1


@dataclass
class AppState:
    """Resources the lifespan creates, one set per API process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: TemporalConnection
    login_limiter: RateLimiter
    execution_limiter: RateLimiter
    relay: object  # api.relay.Relay; typed loosely to keep this module import-light
    #: Failed logins per (account, address): the lockout (issue 10).
    login_failures: RateLimiter | None = None
    #: Execution starts per group, and requests per API key.
    group_limiter: RateLimiter | None = None
    key_limiter: RateLimiter | None = None
    #: Who recent GET requests' access tokens were (KASAL_AUTH_CACHE_SECONDS; None: off).
    principals: PrincipalCache | None = None


#: Methods that change nothing: the only ones answered from :class:`PrincipalCache`.
READING = frozenset({"GET", "HEAD", "OPTIONS"})


def get_state(request: Request) -> AppState:
    """The running app's resources."""
    return request.app.state.kasal


async def _state_dependency(request: Request) -> AppState:
    # A coroutine on purpose: FastAPI runs a plain ``def`` dependency in its thread pool,
    # a thread hop per request for an attribute read (10% of a status read's CPU).
    return request.app.state.kasal


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session: the one place a request's writes are committed.

    Declared with ``scope="function"`` below so the commit happens before the response is
    sent: a failed commit is an error response, never a success that was not saved.
    """
    state = get_state(request)
    async with state.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
        if state.principals is not None and request.method not in READING:
            state.principals.clear()  # after the commit: see PrincipalCache


#: The two ways a request shows its credentials. :func:`get_principal` calls them itself
#: rather than declaring them as sub-dependencies (each one FastAPI solves costs every request
#: its share; status polls are the API's hottest path); :mod:`api.openapi` documents them on
#: every operation that needs a principal, as FastAPI would have.
bearer = HTTPBearer(
    auto_error=False,
    description="the access token from /api/v1/auth/login, or an API key (kasal_...)",
)
api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key (kasal_...)"
)
#: The header that picks the group a person acts in (default: their oldest membership). API
#: keys ignore it.
GROUP_HEADER = "X-Kasal-Group"
#: Ids are 32 lowercase hex characters (uuid4().hex); anything else is a 422, not a lookup.
ID_PATTERN = r"^[0-9a-f]{32}$"
_ID = re.compile(ID_PATTERN)

StateDep = Annotated[AppState, Depends(_state_dependency)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def client_address(request: Request) -> str:
    """The address rate limits and the audit log name (the TCP peer)."""
    return request.client.host if request.client else "unknown"


def client_address_of(connection: HTTPConnection) -> str:
    """:func:`client_address` of a request or a WebSocket."""
    return connection.client.host if connection.client else "unknown"


async def get_principal(request: Request, session: SessionDep, state: StateDep) -> Principal:
    """Who is calling: an API key (``X-API-Key`` or ``Authorization: Bearer kasal_...``), a
    password sign-in's access token, or (trusted-proxy mode) the proxy's identity header.

    401 without valid credentials. A ``read``-scoped key may only read (GET), whatever the
    route. The principal is kept on ``request.state`` for the audit log.
    """
    credentials = await bearer(request)
    bearer_token = credentials.credentials if credentials is not None else None
    api_key = await api_key_header(request)
    group = request_group(request)
    cache = state.principals
    key: tuple[str, str] | None = None
    if cache is not None:
        if request.method not in READING:
            cache.clear()  # it may change credentials or roles: see PrincipalCache
        elif bearer_token and not api_key and not bearer_token.startswith("kasal_"):
            key = (bearer_token, group or "")
    cached = cache.get(key) if cache is not None and key is not None else None
    if cached is not None:
        principal, user = cached
        assert bearer_token is not None  # only tokens are kept
        decode_access_token(bearer_token, state.settings)  # expiry stays exact
    else:
        generation = cache.generation if cache is not None else 0
        principal, user = await resolve_principal(
            session,
            state,
            address=client_address(request),
            headers=request.headers,
            bearer_token=bearer_token,
            api_key=api_key,
            group=group,
        )
        if cache is not None and key is not None:
            cache.put(key, generation, principal, user)
    request.state.principal = principal
    request.state.user = user
    read_only = principal.key_id is not None and principal.cap < Role.OPERATOR
    if read_only and request.method not in ("GET", "HEAD", "OPTIONS"):
        raise PermissionDeniedError("this API key has the read scope: it may only read")
    return principal


def request_group(request: Request) -> str | None:
    """The ``X-Kasal-Group`` a request names, if any; 422 if it is not a group id."""
    group = request.headers.get(GROUP_HEADER)
    if group is None or _ID.fullmatch(group):
        return group
    raise RequestValidationError(
        [
            {
                "type": "string_pattern_mismatch",
                "loc": ("header", GROUP_HEADER),
                "msg": f"String should match pattern '{ID_PATTERN}'",
                "input": group,
                "ctx": {"pattern": ID_PATTERN},
            }
        ]
    )


async def resolve_principal(
    session: AsyncSession,
    state: AppState,
    *,
    address: str,
    headers: Mapping[str, str],
    bearer_token: str | None,
    api_key: str | None,
    group: str | None,
) -> tuple[Principal, User]:
    """The principal and user behind a request's credentials (HTTP and WebSocket share it)."""
    from api.services.credentials import (
        looks_like_key,
        principal_for_key,
        principal_for_token,
        principal_for_user,
    )

    settings = state.settings
    key = api_key or (bearer_token if bearer_token and looks_like_key(bearer_token) else None)
    if key is not None:
        principal, user = await principal_for_key(session, key.strip())
        if state.key_limiter is not None:
            await state.key_limiter.hit(principal.key_id or "")
        return principal, user
    if bearer_token:
        user_id = decode_access_token(bearer_token, settings)
        return await principal_for_token(session, user_id, group_id=group)
    proxied = proxy_identity(settings, address, headers)
    if proxied is not None:
        user = await user_for_proxy(session, proxied)
        return await principal_for_user(session, user, group_id=group, via="trusted_proxy"), user
    raise AuthError(
        "not authenticated: send 'Authorization: Bearer <token or API key>' or 'X-API-Key'"
    )


def proxy_identity(settings: Settings, address: str, headers: Mapping[str, str]) -> str | None:
    """The email the trusted proxy put in its header, if this request came from it.

    Requests from anywhere else never have the header believed: a client that sets it
    itself is simply not authenticated by it.
    """
    if not settings.trusted_proxy_header or not is_trusted_proxy(settings, address):
        return None
    value = headers.get(settings.trusted_proxy_header, "").strip().lower()
    return value if value and "@" in value else None


def is_trusted_proxy(settings: Settings, address: str) -> bool:
    """True if ``address`` is one of the proxies the operator named (addresses or CIDRs)."""
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies)


async def user_for_proxy(session: AsyncSession, email: str) -> User:
    """The user the proxy vouches for, made on first sight (the platform manages people);
    a disabled account stays disabled."""
    users = UserRepository(session)
    user = await users.get_by_email(email)
    if user is None:
        # No usable password: this account signs in through the proxy only.
        await users.create_if_absent(email, "!proxy:" + secrets.token_hex(16))
        user = await users.get_by_email(email)
    if user is None or not user.is_active:
        raise AuthError("this account is disabled")
    return user


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_current_user(request: Request, principal: CurrentPrincipal) -> User:
    """The user behind the request's credentials; 401 without valid ones."""
    return request.state.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin(principal: CurrentPrincipal, request: Request) -> User:
    """The current user, who must be a platform admin (and, through a key, one with the
    admin scope)."""
    if not principal.is_superuser:
        raise PermissionDeniedError("only an admin may do this")
    if principal.cap < Role.ADMIN:
        raise PermissionDeniedError("this API key's scopes do not include admin")
    return request.state.user


AdminUser = Annotated[User, Depends(get_admin)]


async def get_temporal_client(state: StateDep) -> Client:
    """The Temporal client; 503 while Temporal cannot be reached."""
    return await state.temporal.get()


TemporalClientDep = Annotated[Client, Depends(get_temporal_client)]


async def get_temporal_client_if_up(state: StateDep) -> Client | None:
    """The Temporal client, or None while Temporal cannot be reached (for requests that
    can do without it, such as checking a crew against the workers' catalog)."""
    try:
        return await state.temporal.get()
    except TemporalUnavailableError:
        return None


OptionalTemporalClientDep = Annotated[Client | None, Depends(get_temporal_client_if_up)]


async def get_settings_dep(state: StateDep) -> Settings:
    """The settings the app was created with."""
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

IdPath = Annotated[str, Path(pattern=ID_PATTERN, description="32 hex characters")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")]
Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
