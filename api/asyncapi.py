"""The WebSocket protocol as an AsyncAPI 3.0 document, served at ``/api/asyncapi.json``.

The message schemas come from the same Pydantic models the socket validates client
messages with (``api/routes/ws.py``) and the same ``EventOut`` every event is sent as, so
the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.routes.ws import AuthMessage, PingMessage, SubscribeMessage, UnsubscribeMessage
from api.schemas import ErrorDetail, EventOut

router = APIRouter(tags=["websocket"])
REF = "#/components/schemas/{model}"


class AuthenticatedMessage(BaseModel):
    """Sent once the connection is authenticated."""

    type: Literal["authenticated"]
    user_id: str


class SubscribedMessage(BaseModel):
    """A subscription is on: events from ``from_offset`` follow."""

    type: Literal["subscribed"]
    execution_id: str
    from_offset: int = Field(ge=0)


class UnsubscribedMessage(BaseModel):
    """A subscription is off."""

    type: Literal["unsubscribed"]
    execution_id: str


class StreamEndMessage(BaseModel):
    """The execution has ended and every event was sent; reconnect from ``next_offset``
    if the stream was cut (then ``error`` says why)."""

    type: Literal["stream_end"]
    execution_id: str
    next_offset: int = Field(ge=0)
    error: ErrorDetail | None = None


class RequestErrorMessage(BaseModel):
    """A request could not be served (bad message, unknown execution, not authenticated)."""

    type: Literal["request_error"]
    execution_id: str | None = None
    error: ErrorDetail


class PongMessage(BaseModel):
    """The answer to ``ping``."""

    type: Literal["pong"]


CLIENT: dict[str, type[BaseModel]] = {
    "auth": AuthMessage,
    "subscribe": SubscribeMessage,
    "unsubscribe": UnsubscribeMessage,
    "ping": PingMessage,
}
SUMMARIES = {
    "auth": "Authenticate (first message) when no Authorization header was sent.",
    "subscribe": "Follow executions from an offset (every event from it on, once, in order).",
    "unsubscribe": "Stop following an execution.",
    "ping": "Ask for a pong.",
    "event": "One event of an execution, at its offset.",
}
SERVER: dict[str, type[BaseModel]] = {
    "authenticated": AuthenticatedMessage,
    "subscribed": SubscribedMessage,
    "unsubscribed": UnsubscribedMessage,
    "event": EventOut,
    "stream_end": StreamEndMessage,
    "request_error": RequestErrorMessage,
    "pong": PongMessage,
}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``WS /api/v1/ws``."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, model in {**CLIENT, **SERVER}.items():
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        messages[name] = {
            "name": name,
            "title": model.__name__,
            "summary": SUMMARIES.get(name) or (model.__doc__ or name).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": REF.format(model=model.__name__)},
        }
    ref = "#/channels/executionEvents/messages/{name}"
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Kasal execution events",
            "version": "0.1.0",
            "description": (
                "Live events of executions over a WebSocket. Authenticate with an "
                "`Authorization: Bearer <token or API key>` or `X-API-Key` header, or a first "
                "`auth` message (an access token or an API key); subscribe to executions of "
                "the caller's groups (others are not_found) from an offset; every event is "
                "sent once, in order; a client "
                "that reconnects subscribes from the offset after the last one it received. "
                "JSON text frames. The same events are served as Server-Sent Events at "
                "`GET /api/v1/executions/{id}/events`."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "executionEvents": {
                "address": "/api/v1/ws",
                "title": "Execution events",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            }
        },
        "operations": {
            "sendClientMessage": {
                "action": "send",
                "channel": {"$ref": "#/channels/executionEvents"},
                "summary": "What a client sends.",
                "messages": [{"$ref": ref.format(name=n)} for n in CLIENT],
            },
            "receiveServerMessage": {
                "action": "receive",
                "channel": {"$ref": "#/channels/executionEvents"},
                "summary": "What the server sends.",
                "messages": [{"$ref": ref.format(name=n)} for n in SERVER],
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }


@router.get("/api/asyncapi.json", include_in_schema=False)
async def asyncapi() -> dict[str, Any]:
    """The WebSocket protocol, machine-readable (AsyncAPI 3.0)."""
    return asyncapi_document()
