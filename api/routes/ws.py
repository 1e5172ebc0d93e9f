"""``WS /api/v1/ws``: live execution events.

Protocol (JSON text frames):

- authenticate with an ``Authorization: Bearer <token or API key>`` or ``X-API-Key`` header,
  or with a first message ``{"type": "auth", "token": "..."}`` (an access token or an API
  key; browsers cannot set headers; tokens in URLs end up in access logs, so they are not
  accepted there); executions of groups the caller is not in are ``not_found``;
- ``{"type": "subscribe", "execution_id": "...", "from_offset": 0}`` (or ``execution_ids``
  for several) -> ``{"type": "subscribed", ...}``, then every event from ``from_offset`` on:
  ``{"type": "task_start", "offset": 3, "execution_id": ..., "data": ..., ...}``;
  a client that reconnects sends the offset after the last one it received;
- ``{"type": "stream_end", "execution_id": ..., "next_offset": n}`` once an execution has
  finished and every event was sent; ``{"type": "unsubscribe", "execution_id": ...}``;
  ``{"type": "ping"}`` -> ``{"type": "pong"}``;
- problems with a request: ``{"type": "request_error", "error": {code, message, details}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Annotated, Any, Literal

import jwt
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketState

from api.deps import AppState, client_address_of, resolve_principal
from api.errors import error_body
from api.relay import Relay, SlowClientError
from api.schemas import wire_event
from api.services.access import execution_for
from api.services.credentials import looks_like_key
from kasal.access import Principal
from kasal.db.models import ApiKey, User, utcnow
from kasal.db.repositories import FINISHED, TraceRepository
from kasal.exceptions import KasalError

log = logging.getLogger(__name__)
router = APIRouter(tags=["websocket"])

AUTH_TIMEOUT = 10.0
MAX_SUBSCRIPTIONS = 100
#: A connection authenticated by an API key (or the trusted proxy) is re-authenticated
#: after this long: a revoked key does not keep a socket for ever.
KEY_CONNECTION_SECONDS = 3600.0
#: Close codes: policy violation (auth), and "try again later" for a dropped slow client.
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013

ExecutionId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AuthMessage(_Message):
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=4096)


class SubscribeMessage(_Message):
    type: Literal["subscribe"]
    execution_id: ExecutionId | None = None
    execution_ids: list[ExecutionId] | None = Field(default=None, max_length=MAX_SUBSCRIPTIONS)
    from_offset: int = Field(default=0, ge=0)


class UnsubscribeMessage(_Message):
    type: Literal["unsubscribe"]
    execution_id: ExecutionId


class PingMessage(_Message):
    type: Literal["ping"]


ClientMessage: TypeAdapter[Any] = TypeAdapter(
    Annotated[
        AuthMessage | SubscribeMessage | UnsubscribeMessage | PingMessage,
        Field(discriminator="type"),
    ]
)


class Connection:
    """One client socket and its subscriptions."""

    def __init__(
        self, websocket: WebSocket, state: AppState, user: User, principal: Principal
    ) -> None:
        self.websocket = websocket
        self.state = state
        self.relay: Relay = state.relay  # type: ignore[assignment]
        self.user = user
        self.principal = principal
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self.dropped: str | None = None

    async def send(self, text: str) -> None:
        """Send one frame; a socket that will not take it in time marks the client slow."""
        async with self._send_lock:
            try:
                await asyncio.wait_for(self.websocket.send_text(text), self.relay.send_timeout)
            except TimeoutError:
                raise SlowClientError("the client stopped reading") from None

    async def send_json(self, payload: dict[str, Any]) -> None:
        """Send a control message."""
        await self.send(json.dumps(payload, default=str))

    async def request_error(self, code: str, message: str, **extra: Any) -> None:
        """Tell the client one of its requests failed."""
        await self.send_json({"type": "request_error", **extra, **error_body(code, message)})

    async def run(self) -> None:
        """Serve the client's requests until it disconnects or is dropped."""
        try:
            while True:
                raw = await self.websocket.receive_text()
                await self.handle(raw)
        finally:
            for task in self.subscriptions.values():
                task.cancel()
            for task in self.subscriptions.values():
                with contextlib.suppress(BaseException):
                    await task

    async def handle(self, raw: str) -> None:
        """Act on one client message."""
        try:
            message = ClientMessage.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "message"
            await self.request_error("invalid_message", f"{where}: {first['msg']}")
            return
        if isinstance(message, PingMessage):
            await self.send_json({"type": "pong"})
        elif isinstance(message, AuthMessage):
            await self.request_error("invalid_message", "already authenticated")
        elif isinstance(message, UnsubscribeMessage):
            task = self.subscriptions.pop(message.execution_id, None)
            if task is not None:
                task.cancel()
            await self.send_json({"type": "unsubscribed", "execution_id": message.execution_id})
        else:
            ids = list(message.execution_ids or [])
            if message.execution_id:
                ids.insert(0, message.execution_id)
            if not ids:
                await self.request_error("invalid_message", "give execution_id or execution_ids")
                return
            for execution_id in dict.fromkeys(ids):
                await self.subscribe(execution_id, message.from_offset)

    async def subscribe(self, execution_id: str, from_offset: int) -> None:
        """Start streaming one execution (replacing an existing subscription to it)."""
        if execution_id not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            await self.request_error(
                "too_many_subscriptions",
                f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection",
                execution_id=execution_id,
            )
            return
        async with self.state.sessions() as session:
            if self.principal.key_id is not None and not await key_still_valid(
                session, self.principal.key_id
            ):
                await _refuse(self.websocket, "the API key was revoked or has expired")
                return
            try:
                execution = await execution_for(session, self.principal, execution_id)
            except KasalError as exc:
                await self.request_error(exc.code, exc.message, execution_id=execution_id)
                return
            stored = execution.status in FINISHED and execution.status_detail is not None
        old = self.subscriptions.pop(execution_id, None)
        if old is not None:
            old.cancel()
            with contextlib.suppress(BaseException):
                await old
        await self.send_json(
            {"type": "subscribed", "execution_id": execution_id, "from_offset": from_offset}
        )
        self.subscriptions[execution_id] = asyncio.create_task(
            self._stream(execution_id, from_offset, stored)
        )

    async def _stream(self, execution_id: str, from_offset: int, stored: bool) -> None:
        try:
            if stored:
                next_offset = await self._from_database(execution_id, from_offset)
                error = None
            else:
                channel = await self.relay.subscribe(execution_id, from_offset, self.send)
                next_offset, error = len(channel.messages), channel.error
            end: dict[str, Any] = {
                "type": "stream_end",
                "execution_id": execution_id,
                "next_offset": max(next_offset, from_offset),
            }
            if error:
                end.update(error_body("stream_unavailable", error))
            await self.send_json(end)
        except SlowClientError as exc:
            await self.drop(str(exc))
        except (WebSocketDisconnect, RuntimeError):
            pass  # the socket closed under us; run() notices too
        finally:
            if self.subscriptions.get(execution_id) is asyncio.current_task():
                del self.subscriptions[execution_id]

    async def _from_database(self, execution_id: str, offset: int) -> int:
        while True:
            async with self.state.sessions() as session:
                page = await TraceRepository(session).page(execution_id, offset=offset, limit=500)
            for event in page:
                await self.send(wire_event(execution_id, event).model_dump_json())
                offset = (event.offset or 0) + 1
            if len(page) < 500:
                return offset

    async def drop(self, reason: str) -> None:
        """Disconnect a client that cannot keep up, so it slows nobody else."""
        if self.dropped:
            return
        self.dropped = reason
        log.info("dropping a slow WebSocket client: %s", reason)
        with contextlib.suppress(Exception):
            await self.websocket.close(code=CLOSE_TRY_AGAIN, reason="too slow; reconnect")


async def authenticate(websocket: WebSocket, state: AppState) -> tuple[User, Principal] | None:
    """The user behind the connection's credentials (``Authorization`` or ``X-API-Key``
    header, or a first ``auth`` message), as HTTP requests resolve them."""
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header and scheme.lower() != "bearer":
        token = ""
    api_key = websocket.headers.get("x-api-key") or None
    proxied = bool(state.settings.trusted_proxy_header) and bool(
        websocket.headers.get(state.settings.trusted_proxy_header)
    )
    if not token and not api_key and not proxied:
        try:
            raw = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT)
            message = ClientMessage.validate_json(raw)
        except (TimeoutError, ValidationError, KeyError):
            message = None
        if not isinstance(message, AuthMessage):
            await _refuse(websocket, 'authenticate first: {"type": "auth", "token": "..."}')
            return None
        token = message.token
    token = token.strip()
    async with state.sessions() as session:
        try:
            principal, user = await resolve_principal(
                session,
                state,
                address=client_address_of(websocket),
                headers=websocket.headers,
                bearer_token=token or None,
                api_key=api_key,
                group=websocket.headers.get("x-kasal-group") or None,
            )
            await session.commit()  # an API key's last use
        except KasalError as exc:
            await _refuse(websocket, exc.message)
            return None
    # Verified above: an access token's connection ends with the token. Keys and proxy
    # identities are checked again at each subscription.
    if token and not looks_like_key(token):
        claims = jwt.decode(token, options={"verify_signature": False})
        websocket.state.token_expires = float(claims["exp"])
    else:
        websocket.state.token_expires = time.time() + KEY_CONNECTION_SECONDS
    return user, principal


async def key_still_valid(session: Any, key_id: str) -> bool:
    """True while the API key is neither revoked nor expired."""
    key = await session.get(ApiKey, key_id)
    now = utcnow()
    return not (
        key is None
        or key.revoked_at is not None
        or (key.expires_at is not None and key.expires_at <= now)
    )


async def _refuse(websocket: WebSocket, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(
            json.dumps({"type": "request_error", **error_body("unauthorized", message)})
        )
        await websocket.close(code=CLOSE_POLICY, reason="unauthorized")


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Authenticated live events of one or more executions."""
    state: AppState = websocket.app.state.kasal
    await websocket.accept()
    identity = await authenticate(websocket, state)
    if identity is None:
        return
    user, principal = identity
    connection = Connection(websocket, state, user, principal)
    await connection.send_json({"type": "authenticated", "user_id": user.id})
    try:
        # The connection lives as long as its token: a client must reconnect with a new one.
        await asyncio.wait_for(connection.run(), websocket.state.token_expires - time.time())
    except TimeoutError:
        await _refuse(websocket, "the access token expired: reconnect with a new one")
    except WebSocketDisconnect:
        pass
    except RuntimeError:
        # Raised by Starlette when reading a socket closed by drop(); nothing to tell anyone.
        if websocket.client_state != WebSocketState.DISCONNECTED and not connection.dropped:
            raise
