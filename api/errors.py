"""One JSON error shape for every 4xx and 5xx: ``{"error": {"code", "message", "details"}}``.

Domain errors (``kasal.exceptions``) carry no HTTP codes; this module gives them one.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from kasal.exceptions import (
    AuthError,
    ConflictError,
    ExecutionCancelledError,
    ExecutionFailedError,
    InvalidRequestError,
    InvalidSpecError,
    KasalError,
    NotFoundError,
    PermissionDeniedError,
    TemporalUnavailableError,
)

log = logging.getLogger(__name__)


class RateLimitedError(KasalError):
    """Too many requests; ``retry_after`` seconds until the next one is allowed."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class QuotaExceededError(RateLimitedError):
    """A group runs as many executions as its quota allows (issue 10)."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, running: int, quota: int, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=retry_after)
        self.details = {"retry_after": retry_after, "running": running, "quota": quota}


class ServiceUnavailableError(KasalError):
    """A dependency of the service (database, Temporal) is not available."""

    code = "service_unavailable"


#: HTTP status of each domain error; the most specific class wins (checked along the MRO).
STATUS_BY_ERROR: dict[type[KasalError], int] = {
    InvalidSpecError: 422,
    InvalidRequestError: 422,
    NotFoundError: 404,
    ConflictError: 409,
    ExecutionFailedError: 409,
    ExecutionCancelledError: 409,
    AuthError: 401,
    PermissionDeniedError: 403,
    RateLimitedError: 429,
    TemporalUnavailableError: 503,
    ServiceUnavailableError: 503,
}

#: Codes for errors Starlette/FastAPI raise themselves.
CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The one error shape."""
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON response in the one error shape."""
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def status_for(exc: KasalError) -> int:
    """The HTTP status of a domain error (500 if it has none)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Where and why a request was invalid. Inputs are not echoed: they may hold secrets."""
    details = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        details.append({"field": ".".join(loc), "message": err.get("msg"), "type": err.get("type")})
    return details


async def _kasal_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KasalError)
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after)
    if status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    details = exc.details
    if details is None and exc.field:
        details = {"field": exc.field}
    return error_response(status, exc.code, exc.message, details, headers or None)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc)
    if any(d["type"] == "json_invalid" for d in details):
        return error_response(400, "malformed_json", "the request body is not valid JSON", details)
    first = details[0] if details else {"field": "", "message": "invalid request"}
    message = f"{first['field'] or 'request'}: {first['message']}"
    if len(details) > 1:
        message += f" (and {len(details) - 1} more)"
    return error_response(422, "validation_error", message, details)


#: Methods a 405 may name in ``Allow``.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path.

    Starlette's 405 names only the first route that matched the path, but one path is often
    several routes (GET, PUT and DELETE of a crew are three): RFC 9110 wants them all. Each
    method is tried against the routes' own matching (``BaseRoute.matches``), so nested
    routers are covered without knowing how the framework stores them.
    """
    allowed = []
    for method in HTTP_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = CODE_BY_STATUS.get(exc.status_code, "error" if exc.status_code >= 500 else "bad_request")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
            message = f"method {request.method} is not allowed here; use {', '.join(allowed)}"
    return error_response(exc.status_code, code, message, headers=headers or None)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log; the client learns nothing about internals.
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the app can raise to the one JSON shape."""
    app.add_exception_handler(KasalError, _kasal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
