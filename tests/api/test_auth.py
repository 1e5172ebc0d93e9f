"""Login, tokens, users, admin role, rate limits, secrets kept out of responses and logs."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr

from api.main import create_app
from api.security import InsecureConfigurationError
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    TEST_SECRET,
    api_settings_for,
    asgi_client,
    login,
    running_app,
)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return body["error"]


async def test_login_returns_a_token_and_me_the_user(client):
    response = await client.post(
        "/api/v1/auth/login", json={"username": ADMIN_EMAIL.upper(), "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"], issuer="kasal")
    assert claims["exp"] - claims["iat"] == 3600
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["email"] == ADMIN_EMAIL and me.json()["is_admin"] is True
    assert "hashed_password" not in me.text and ADMIN_PASSWORD not in me.text


@pytest.mark.parametrize(
    "username,password",
    [(ADMIN_EMAIL, "wrong-password"), ("nobody@example.com", ADMIN_PASSWORD)],
)
async def test_wrong_credentials_are_one_401(client, username, password):
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    error = assert_error(response, 401, "unauthorized")
    assert error["message"] == "wrong email or password"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_admin_creates_users_and_others_may_not(client, admin, alice):
    created = await client.post(
        "/api/v1/auth/users",
        json={"email": "Carol@Example.com", "password": PASSWORD, "full_name": "Carol"},
        headers=admin,
    )
    assert created.status_code == 201
    assert created.json()["email"] == "carol@example.com"
    assert created.json()["is_admin"] is False
    assert PASSWORD not in created.text and "password" not in created.json()
    duplicate = await client.post(
        "/api/v1/auth/users",
        json={"email": "carol@example.com", "password": PASSWORD},
        headers=admin,
    )
    assert_error(duplicate, 409, "conflict")
    refused = await client.post(
        "/api/v1/auth/users",
        json={"email": "dave@example.com", "password": PASSWORD},
        headers=alice,
    )
    assert_error(refused, 403, "forbidden")
    carol = await login(client, "carol@example.com", PASSWORD)
    assert (await client.get("/api/v1/auth/me", headers=carol)).json()["full_name"] == "Carol"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "eve@example.com", "password": "tiny7"},
        {"email": "eve@example.com", "password": PASSWORD, "role": "admin"},
        {"email": "eve@example.com", "password": PASSWORD, "is_admin": "yes"},
    ],
)
async def test_bad_user_bodies_are_422(client, admin, body):
    response = await client.post("/api/v1/auth/users", json=body, headers=admin)
    error = assert_error(response, 422, "validation_error")
    assert PASSWORD not in response.text and "tiny7" not in json.dumps(error["details"])


def _token(claims: dict, key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _unsigned(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_bad_tokens_are_401(client, admin):
    me = (await client.get("/api/v1/auth/me", headers=admin)).json()
    now = datetime.now(UTC)
    good = {
        "sub": me["id"],
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": "kasal",
        "typ": "access",
    }
    valid = _token(good)
    header, payload, signature = valid.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "==")) | {"sub": "x" * 32}
    tampered_payload = (
        base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=").decode()
    )
    epoch_claims = {**good, "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 300}
    cases = {
        "expired": _token(
            {**good, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)}
        ),
        "tampered": f"{header}.{tampered_payload}.{signature}",
        "alg none": _unsigned(epoch_claims),
        "other key": _token(good, key="another-secret-key-0123456789abcdef0123"),
        "HS512": _token(good, algorithm="HS512"),
        "no exp": _token({k: v for k, v in good.items() if k != "exp"}),
        "unknown user": _token({**good, "sub": "0" * 32}),
        "wrong type": _token({**good, "typ": "refresh"}),
        "garbage": "not.a.token",
    }
    for name, token in cases.items():
        response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        error = assert_error(response, 401, "unauthorized")
        assert token not in response.text, name
        if name == "expired":
            assert "expired" in error["message"]
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {valid}"})
    ).is_success
    for headers in ({}, {"Authorization": f"Basic {valid}"}, {"Authorization": "Bearer"}):
        assert_error(await client.get("/api/v1/auth/me", headers=headers), 401, "unauthorized")


async def test_login_is_rate_limited_with_retry_after(api_settings):
    settings = api_settings_for(api_settings, login_rate_limit="3/minute")
    async with running_app(settings) as app, asgi_client(app) as client:
        body = {"username": ADMIN_EMAIL, "password": "wrong"}
        for _ in range(3):
            assert (await client.post("/api/v1/auth/login", json=body)).status_code == 401
        limited = await client.post("/api/v1/auth/login", json=body)
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_refuses_the_default_secret_outside_dev(settings):
    production = settings.model_copy(update={"env": "production"})
    with pytest.raises(InsecureConfigurationError, match="KASAL_SECRET_KEY"):
        create_app(production)
    with pytest.raises(InsecureConfigurationError):
        create_app(production.model_copy(update={"secret_key": SecretStr("short")}))
    create_app(production.model_copy(update={"secret_key": SecretStr(TEST_SECRET)}))
    create_app(settings)  # dev keeps working with the default


async def test_no_secret_reaches_the_logs(api_settings, caplog):
    caplog.set_level(logging.DEBUG)
    async with running_app(api_settings) as app, asgi_client(app) as client:
        headers = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        await client.post("/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": "nope"})
        await client.get("/api/v1/auth/me", headers=headers)
    token = headers["Authorization"].split()[1]
    for secret in (ADMIN_PASSWORD, TEST_SECRET, token, "nope"):
        assert secret not in caplog.text
    assert TEST_SECRET not in repr(api_settings) and ADMIN_PASSWORD not in repr(api_settings)


async def test_admin_is_seeded_once_and_never_reset(api_settings):
    async with running_app(api_settings) as app, asgi_client(app) as client:
        await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    changed = api_settings_for(api_settings, admin_password=SecretStr("another-password-1"))
    async with running_app(changed) as app, asgi_client(app) as client:
        await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
