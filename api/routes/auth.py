"""Login (with refresh tokens), the current user, and user creation by admins."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.exc import IntegrityError

from api.audit import note
from api.deps import AdminUser, CurrentUser, SessionDep, StateDep, client_address
from api.schemas import LoginInput, TokenOut, UserCreate, UserOut
from api.security import create_access_token, hash_password, verify_password
from api.services.credentials import (
    issue_refresh_token,
    revoke_refresh_token,
    rotate_refresh_token,
)
from api.team_schemas import RefreshInput
from kasal.db.repositories import UserRepository
from kasal.db.teams import GroupRepository
from kasal.exceptions import AuthError, ConflictError

router = APIRouter(prefix="/auth", tags=["auth"])

__all__ = ["client_address", "router"]


@router.post("/login", response_model=TokenOut)
async def login(body: LoginInput, request: Request, session: SessionDep, state: StateDep):
    """Exchange an email and password for an access token and a refresh token.

    Rate limited per client address; failed attempts lock that address out of that
    account for a while (``KASAL_LOGIN_FAILURE_LIMIT``), never the account as a whole, so
    its owner still signs in from elsewhere.
    """
    address = client_address(request)
    email = body.username.strip().lower()
    note(request, "auth.login", "user", None, actor_email=email)
    await state.login_limiter.hit(address)
    lockout_key = f"{email}|{address}"
    if state.login_failures is not None:
        await state.login_failures.check(lockout_key)
    user = await UserRepository(session).get_by_email(email)
    if not verify_password(body.password, user.hashed_password if user else None) or (
        user is not None and not user.is_active
    ):
        if state.login_failures is not None:
            await state.login_failures.count(lockout_key)
        raise AuthError("wrong email or password")
    assert user is not None
    if state.login_failures is not None:
        await state.login_failures.reset(lockout_key)
    note(request, "auth.login", "user", user.id, actor_email=email, actor_user_id=user.id)
    token, lifetime = create_access_token(user.id, state.settings)
    refresh = await issue_refresh_token(session, user.id, state.settings)
    return TokenOut(access_token=token, expires_in=lifetime, refresh_token=refresh)


@router.post("/refresh", response_model=TokenOut)
async def refresh(body: RefreshInput, request: Request, session: SessionDep, state: StateDep):
    """A new access token and refresh token for a refresh token (each is good once: a
    replayed one revokes the whole sign-in)."""
    note(request, "auth.refresh", "user")
    user, new_refresh = await rotate_refresh_token(session, body.refresh_token, state.settings)
    note(request, "auth.refresh", "user", user.id, actor_email=user.email, actor_user_id=user.id)
    token, lifetime = create_access_token(user.id, state.settings)
    return TokenOut(access_token=token, expires_in=lifetime, refresh_token=new_refresh)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: RefreshInput, request: Request, session: SessionDep) -> Response:
    """End a sign-in: its refresh token (and every successor) stops working."""
    user_id = await revoke_refresh_token(session, body.refresh_token)
    note(request, "auth.logout", "user", user_id, actor_user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser):
    """The signed-in user."""
    return user


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, request: Request, session: SessionDep, _admin: AdminUser):
    """Create a user (admins only), with a personal group of their own."""
    users = UserRepository(session)
    if await users.get_by_email(body.email) is not None:
        raise ConflictError(f"a user with email {body.email.lower()} exists")
    try:
        user = await users.create(
            body.email,
            hash_password(body.password),
            is_admin=body.is_admin,
            full_name=body.full_name,
        )
    except IntegrityError:  # created concurrently
        raise ConflictError(f"a user with email {body.email.lower()} exists") from None
    group_id = await GroupRepository(session).ensure_personal(user)
    note(
        request,
        "user.create",
        "user",
        user.id,
        group_id=group_id,
        after={"user_id": user.id, "group_id": group_id, "is_admin": user.is_admin},
    )
    return user
