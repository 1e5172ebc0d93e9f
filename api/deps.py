"""Request dependencies, as ``Annotated`` aliases routes declare by type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.guards import RateLimiter
from api.security import decode_access_token
from api.temporal import TemporalConnection
from kasal.db.models import User
from kasal.db.repositories import UserRepository
from kasal.exceptions import AuthError, PermissionDeniedError, TemporalUnavailableError
from kasal.settings import Settings


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


def get_state(request: Request) -> AppState:
    """The running app's resources."""
    return request.app.state.kasal


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session: the one place a request's writes are committed.

    Declared with ``scope="function"`` below so the commit happens before the response is
    sent: a failed commit is an error response, never a success that was not saved.
    """
    async with get_state(request).sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


bearer = HTTPBearer(auto_error=False, description="the access token from /api/v1/auth/login")

StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_current_user(
    session: SessionDep,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The user the bearer token names; 401 without a valid token or for a disabled user."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("not authenticated: send 'Authorization: Bearer <token>'")
    return await user_for_token(session, credentials.credentials, state.settings)


async def user_for_token(session: AsyncSession, token: str, settings: Settings) -> User:
    """The active user behind an access token (HTTP and WebSocket share this)."""
    user_id = decode_access_token(token, settings)
    user = await UserRepository(session).get(user_id)
    if user is None or not user.is_active:
        raise AuthError("the access token is invalid")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin(user: CurrentUser) -> User:
    """The current user, who must be an admin."""
    if not user.is_admin:
        raise PermissionDeniedError("only an admin may do this")
    return user


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


def get_settings_dep(state: StateDep) -> Settings:
    """The settings the app was created with."""
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

#: Ids are 32 lowercase hex characters (uuid4().hex); anything else is a 422, not a lookup.
ID_PATTERN = r"^[0-9a-f]{32}$"
IdPath = Annotated[str, Path(pattern=ID_PATTERN, description="32 hex characters")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")]
Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
