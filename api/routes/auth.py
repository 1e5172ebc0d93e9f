"""Login, the current user, and user creation by admins."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy.exc import IntegrityError

from api.deps import AdminUser, CurrentUser, SessionDep, StateDep
from api.schemas import LoginInput, TokenOut, UserCreate, UserOut
from api.security import create_access_token, hash_password, verify_password
from kasal.db.repositories import UserRepository
from kasal.exceptions import AuthError, ConflictError

router = APIRouter(prefix="/auth", tags=["auth"])


def client_address(request: Request) -> str:
    """The address rate limits count against."""
    return request.client.host if request.client else "unknown"


@router.post("/login", response_model=TokenOut)
async def login(body: LoginInput, request: Request, session: SessionDep, state: StateDep):
    """Exchange an email and password for an access token (rate limited per client)."""
    await state.login_limiter.hit(client_address(request))
    user = await UserRepository(session).get_by_email(body.username)
    if not verify_password(body.password, user.hashed_password if user else None):
        raise AuthError("wrong email or password")
    assert user is not None
    if not user.is_active:
        raise AuthError("wrong email or password")
    token, lifetime = create_access_token(user.id, state.settings)
    return TokenOut(access_token=token, expires_in=lifetime)


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser):
    """The signed-in user."""
    return user


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, session: SessionDep, _admin: AdminUser):
    """Create a user (admins only)."""
    users = UserRepository(session)
    if await users.get_by_email(body.email) is not None:
        raise ConflictError(f"a user with email {body.email.lower()} exists")
    try:
        return await users.create(
            body.email,
            hash_password(body.password),
            is_admin=body.is_admin,
            full_name=body.full_name,
        )
    except IntegrityError:  # created concurrently
        raise ConflictError(f"a user with email {body.email.lower()} exists") from None
