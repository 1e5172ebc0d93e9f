"""Passwords (argon2 through pwdlib), JWT access tokens (PyJWT, HS256), settings checks."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash

from kasal.exceptions import AuthError, KasalError
from kasal.settings import Settings

ALGORITHM = "HS256"
ISSUER = "kasal"
#: The default of ``Settings.secret_key``: fine on a laptop, refused anywhere else.
DEFAULT_SECRET = Settings.model_fields["secret_key"].default.get_secret_value()
MIN_SECRET_BYTES = 32

password_hash = PasswordHash.recommended()
#: Verified against when the user does not exist, so a wrong email costs as long as a
#: wrong password and response times do not reveal which accounts exist.
_DUMMY_HASH = password_hash.hash("kasal-dummy-password")


class InsecureConfigurationError(KasalError):
    """The service would run with settings that are unsafe outside development."""

    code = "insecure_configuration"


def check_settings(settings: Settings) -> None:
    """Refuse to serve outside ``env=dev`` with the default or a short secret key, and
    anywhere with a trusted-proxy header but no proxy named."""
    if settings.trusted_proxy_header and not settings.trusted_proxies:
        raise InsecureConfigurationError(
            f"KASAL_TRUSTED_PROXY_HEADER={settings.trusted_proxy_header!r} needs "
            "KASAL_TRUSTED_PROXIES, the addresses (or CIDRs) of the proxy that sets it: "
            "otherwise anyone could send the header and be whoever they name"
        )
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise InsecureConfigurationError(
                f"KASAL_TRUSTED_PROXIES: {proxy!r} is not an IP address or CIDR"
            ) from None
    if settings.env == "dev":
        return
    secret = settings.secret_key.get_secret_value()
    if secret == DEFAULT_SECRET or len(secret.encode()) < MIN_SECRET_BYTES:
        raise InsecureConfigurationError(
            f"KASAL_ENV={settings.env!r} needs KASAL_SECRET_KEY set to a random value of at "
            f"least {MIN_SECRET_BYTES} bytes (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`); the default key is for development only"
        )


def hash_password(password: str) -> str:
    """An argon2 hash of ``password``."""
    return password_hash.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    """True if ``password`` matches ``hashed``; takes as long when there is no hash."""
    if hashed is None:
        password_hash.verify(password, _DUMMY_HASH)
        return False
    try:
        return password_hash.verify(password, hashed)
    except Exception:  # a malformed stored hash is a failed login, not a 500
        return False


def create_access_token(user_id: str, settings: Settings) -> tuple[str, int]:
    """A signed access token for ``user_id`` and its lifetime in seconds."""
    lifetime = timedelta(minutes=settings.access_token_minutes)
    now = datetime.now(UTC)
    claims = {"sub": user_id, "iat": now, "exp": now + lifetime, "iss": ISSUER, "typ": "access"}
    token = jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)
    return token, int(lifetime.total_seconds())


#: Tokens whose signature and claims were verified: (secret, token) -> (user id, expiry).
#: A token is immutable and its checks are deterministic but for the clock, which is checked
#: again on every use; the user behind it is still read on every request (a disabled
#: account stops at once). Saves the HMAC and claim parsing per request (5% of a status
#: read's CPU).
_verified: dict[tuple[str, str], tuple[str, float]] = {}
_VERIFIED_MAX = 10_000


def decode_access_token(token: str, settings: Settings) -> str:
    """The user id inside a valid access token; :class:`AuthError` otherwise.

    Only HS256 is accepted, so ``alg: none`` and algorithm-confusion tokens fail.
    """
    secret = settings.secret_key.get_secret_value()
    known = _verified.get((secret, token))
    if known is not None:
        if known[1] > time.time():
            return known[0]
        raise AuthError("the access token has expired")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the access token has expired") from None
    except jwt.InvalidTokenError:
        raise AuthError("the access token is invalid") from None
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        raise AuthError("the access token is invalid")
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[(secret, token)] = (claims["sub"], float(claims["exp"]))
    return claims["sub"]
