"""A typed async client of Kasal's REST API, so programs need not hand-write HTTP.

    async with KasalAPI("http://localhost:8000") as api:
        await api.login("me@example.com", "password")
        started = await api.start_execution(crew_id=crew_id, inputs={"topic": "tea"})
        result = await api.result(started.execution_id, wait=60)   # blocks until the end
        async for event in api.events(started.execution_id):       # SSE, resumable
            ...

Every call is listed in :data:`ROUTES` (method, path, response model); the test suite
checks each against the server's OpenAPI document (path, method, and that the model reads
every field the server documents as required), so this client cannot drift from the API.
Errors raise :class:`APIError` with the API's one error shape (``code``, ``message``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T", bound=BaseModel)


class _Model(BaseModel):
    # Newer servers may add fields: an old client keeps working.
    model_config = ConfigDict(extra="allow")


class Page(_Model, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int
    offset: int
    limit: int


class Token(_Model):
    """An access token."""

    access_token: str
    token_type: str
    expires_in: int


class ExecutionStarted(_Model):
    """An accepted start."""

    execution_id: str
    workflow_id: str
    status: str
    crew_id: str | None
    created_at: datetime


class ExecutionSummary(_Model):
    """An execution in a list."""

    id: str
    workflow_id: str
    crew_id: str | None
    crew_name: str
    status: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    schedule_id: str | None = None
    stop_requested_by: str | None = None
    stop_requested_at: datetime | None = None
    stop_mode: str | None = None


class ExecutionDetail(ExecutionSummary):
    """An execution with per-task progress."""

    inputs: dict[str, Any]
    token_usage: dict[str, Any]
    tasks: list[dict[str, Any]]
    event_count: int


class ExecutionResult(_Model):
    """The end of an execution."""

    execution_id: str
    status: str
    output: str | None
    tasks: list[dict[str, Any]]
    token_usage: dict[str, Any]
    error: str | None


class ExecutionPending(_Model):
    """``wait`` ran out before the end."""

    execution_id: str
    status: str
    waited_seconds: float


class ExecutionCounts(_Model):
    """Executions per state."""

    counts: dict[str, int]
    total: int


class StopResult(_Model):
    """A stop or force-stop."""

    execution_id: str
    status: str
    mode: str
    requested_by: str
    requested_at: datetime
    terminated: bool = False


class CancelResult(_Model):
    """A cancel request."""

    execution_id: str
    status: str
    cancel_requested: bool


class FeedbackResult(_Model):
    """What the execution does with feedback."""

    execution_id: str
    task: str
    approved: bool
    rerun: bool


class Event(_Model):
    """One event (wire form)."""

    type: str
    event: str
    execution_id: str
    offset: int
    timestamp: datetime
    task: str | None = None
    agent: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Trace(_Model):
    """A page of events."""

    execution_id: str
    offset: int
    limit: int
    next_offset: int
    finished: bool
    events: list[Event]


class InboxItem(_Model):
    """A task waiting for a person."""

    id: str
    execution_id: str
    crew_name: str
    task: str
    agent: str
    output: str
    since: datetime
    timeout_seconds: float | None
    expires_at: datetime | None


class Schedule(_Model):
    """A schedule."""

    id: str
    name: str
    crew_id: str | None
    inputs: dict[str, Any]
    created_at: datetime
    temporal_id: str
    timetable: dict[str, Any] | None = None
    paused: bool | None = None
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[dict[str, Any]] = Field(default_factory=list)
    total_runs: int | None = None
    recent_executions: list[ExecutionSummary] = Field(default_factory=list)


class ScheduleAction(_Model):
    """A pause, unpause, trigger or backfill."""

    id: str
    action: str
    paused: bool | None = None


class Webhook(_Model):
    """A webhook subscription (``secret`` only when just made)."""

    id: str
    url: str
    events: list[str]
    crew_id: str | None
    schedule_id: str | None
    description: str
    active: bool
    created_at: datetime
    secret: str | None = None


class Delivery(_Model):
    """One delivery attempt."""

    id: str
    event_id: str
    event_type: str
    execution_id: str | None
    attempt: int
    status_code: int | None
    error: str | None
    succeeded: bool
    created_at: datetime


class Redelivery(_Model):
    """A redelivery started."""

    delivery_id: str
    event_id: str
    workflow_id: str


#: Every call: name -> (method, path, response model; None for no body).
ROUTES: dict[str, tuple[str, str, Any]] = {
    "login": ("POST", "/api/v1/auth/login", Token),
    "start_execution": ("POST", "/api/v1/executions", ExecutionStarted),
    "list_executions": ("GET", "/api/v1/executions", Page[ExecutionSummary]),
    "execution_counts": ("GET", "/api/v1/executions/counts", ExecutionCounts),
    "get_execution": ("GET", "/api/v1/executions/{execution_id}", ExecutionDetail),
    "result": ("GET", "/api/v1/executions/{execution_id}/result", ExecutionResult),
    "stop": ("POST", "/api/v1/executions/{execution_id}/stop", StopResult),
    "force_stop": ("POST", "/api/v1/executions/{execution_id}/force-stop", StopResult),
    "cancel": ("POST", "/api/v1/executions/{execution_id}/cancel", CancelResult),
    "feedback": ("POST", "/api/v1/executions/{execution_id}/feedback", FeedbackResult),
    "delete_execution": ("DELETE", "/api/v1/executions/{execution_id}", None),
    "trace": ("GET", "/api/v1/traces/{job_id}", Trace),
    "events": ("GET", "/api/v1/executions/{execution_id}/events", None),
    "inbox": ("GET", "/api/v1/inbox", list[InboxItem]),
    "answer": ("POST", "/api/v1/inbox/{item_id}", FeedbackResult),
    "create_schedule": ("POST", "/api/v1/schedules", Schedule),
    "list_schedules": ("GET", "/api/v1/schedules", Page[Schedule]),
    "get_schedule": ("GET", "/api/v1/schedules/{schedule_id}", Schedule),
    "update_schedule": ("PUT", "/api/v1/schedules/{schedule_id}", Schedule),
    "pause_schedule": ("POST", "/api/v1/schedules/{schedule_id}/pause", ScheduleAction),
    "unpause_schedule": ("POST", "/api/v1/schedules/{schedule_id}/unpause", ScheduleAction),
    "trigger_schedule": ("POST", "/api/v1/schedules/{schedule_id}/trigger", ScheduleAction),
    "backfill_schedule": ("POST", "/api/v1/schedules/{schedule_id}/backfill", ScheduleAction),
    "delete_schedule": ("DELETE", "/api/v1/schedules/{schedule_id}", None),
    "create_webhook": ("POST", "/api/v1/webhooks", Webhook),
    "list_webhooks": ("GET", "/api/v1/webhooks", Page[Webhook]),
    "delete_webhook": ("DELETE", "/api/v1/webhooks/{webhook_id}", None),
    "deliveries": ("GET", "/api/v1/webhooks/{webhook_id}/deliveries", Page[Delivery]),
    "redeliver": (
        "POST",
        "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        Redelivery,
    ),
}


class APIError(Exception):
    """An error answer: HTTP status, and the API's ``code``, ``message`` and ``details``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class KasalAPI:
    """The REST API, typed. Use as ``async with KasalAPI(url, token=...) as api``.

    ``token`` is an access token or an API key (``kasal_...``: both go as ``Authorization:
    Bearer``); ``group`` sends ``X-Kasal-Group``, the group new crews, schedules, webhooks
    and executions go into (default: the caller's first group).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        group: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self.token = token
        self.group = group

    async def __aenter__(self) -> KasalAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.group:
            headers["X-Kasal-Group"] = self.group
        return {**headers, **(extra or {})}

    async def _call(
        self,
        name: str,
        *,
        path: dict[str, str] | None = None,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> Any:
        method, template, model = ROUTES[name]
        response = await self._http.request(
            method,
            template.format(**(path or {})),
            json=json_body,
            params=_drop_none(params or {}),
            headers=self._headers(headers),
        )
        if response.status_code in accept:
            return response
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except Exception:
                error = {"code": "http_error", "message": response.text[:500]}
            raise APIError(
                response.status_code, error["code"], error["message"], error.get("details")
            )
        if model is None:
            return None
        from pydantic import TypeAdapter

        return TypeAdapter(model).validate_python(response.json())

    # -- auth ------------------------------------------------------------------------------

    async def login(self, email: str, password: str) -> Token:
        """Sign in; later calls use the token."""
        token: Token = await self._call(
            "login", json_body={"username": email, "password": password}
        )
        self.token = token.access_token
        return token

    # -- executions ------------------------------------------------------------------------

    async def start_execution(
        self,
        *,
        crew_id: str | None = None,
        spec: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionStarted:
        """Start a stored crew or an inline spec."""
        body = _drop_none({"crew_id": crew_id, "spec": spec, "inputs": inputs or {}})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("start_execution", json_body=body, headers=headers)  # type: ignore[no-any-return]

    async def list_executions(self, **filters: Any) -> Page[ExecutionSummary]:
        """Executions, newest first: ``status``, ``crew_id``, ``schedule_id``, ``owner_id``,
        ``created_after``, ``created_before``, ``q``, ``offset``, ``limit``."""
        return await self._call("list_executions", params=filters)  # type: ignore[no-any-return]

    async def execution_counts(self, **filters: Any) -> ExecutionCounts:
        """Executions per state (same filters as the list)."""
        return await self._call("execution_counts", params=filters)  # type: ignore[no-any-return]

    async def get_execution(self, execution_id: str) -> ExecutionDetail:
        """State and per-task progress."""
        return await self._call("get_execution", path={"execution_id": execution_id})  # type: ignore[no-any-return]

    async def result(
        self, execution_id: str, *, wait: float | None = None
    ) -> ExecutionResult | ExecutionPending:
        """The result; with ``wait``, blocks until the end or returns
        :class:`ExecutionPending` when the wait runs out."""
        response = await self._call(
            "result",
            path={"execution_id": execution_id},
            params={"wait": wait},
            accept=(202,),
        )
        if isinstance(response, httpx.Response):
            return ExecutionPending.model_validate(response.json())
        return response  # type: ignore[no-any-return]

    async def stop(self, execution_id: str, reason: str | None = None) -> StopResult:
        """Graceful stop: the running task finishes, no new one starts."""
        return await self._call(  # type: ignore[no-any-return]
            "stop", path={"execution_id": execution_id}, json_body={"reason": reason}
        )

    async def force_stop(self, execution_id: str) -> StopResult:
        """Cancel now; terminated if it does not acknowledge in time."""
        return await self._call("force_stop", path={"execution_id": execution_id})  # type: ignore[no-any-return]

    async def cancel(self, execution_id: str) -> CancelResult:
        """Ask the execution to stop (Temporal cancellation)."""
        return await self._call("cancel", path={"execution_id": execution_id})  # type: ignore[no-any-return]

    async def feedback(
        self,
        execution_id: str,
        *,
        approve: bool = False,
        feedback: str | None = None,
        task: str | None = None,
    ) -> FeedbackResult:
        """Approve a waiting task, or send feedback to redo it."""
        body = _drop_none({"approve": approve, "feedback": feedback, "task": task})
        return await self._call(  # type: ignore[no-any-return]
            "feedback", path={"execution_id": execution_id}, json_body=body
        )

    async def delete_execution(self, execution_id: str) -> None:
        """Delete a finished execution with its trace."""
        await self._call("delete_execution", path={"execution_id": execution_id})

    async def trace(self, execution_id: str, offset: int = 0, limit: int = 100) -> Trace:
        """A page of events."""
        return await self._call(  # type: ignore[no-any-return]
            "trace", path={"job_id": execution_id}, params={"offset": offset, "limit": limit}
        )

    async def events(self, execution_id: str, from_offset: int = 0) -> AsyncIterator[Event]:
        """Every event from ``from_offset`` on, live (SSE) until the execution ends; a cut
        connection is resumed from the last offset received, so nothing is lost or
        repeated."""
        next_offset = from_offset
        _method, template, _model = ROUTES["events"]
        url = template.format(execution_id=execution_id)
        for _attempt in range(10):
            headers = self._headers({"Accept": "text/event-stream"})
            if next_offset > 0:
                headers["Last-Event-ID"] = str(next_offset - 1)
            try:
                async with self._http.stream("GET", url, headers=headers, timeout=None) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        error = resp.json().get("error", {})
                        raise APIError(
                            resp.status_code, error.get("code", ""), error.get("message", "")
                        )
                    fields: dict[str, str] = {}
                    async for line in resp.aiter_lines():
                        if line == "":
                            if fields.get("event") == "stream_end":
                                return
                            if "data" in fields:
                                event = Event.model_validate(json.loads(fields["data"]))
                                next_offset = event.offset + 1
                                yield event
                            fields = {}
                        elif not line.startswith(":"):
                            name, _, value = line.partition(": ")
                            fields[name] = value
            except httpx.TransportError:
                continue  # resume after the last event received
        raise APIError(503, "stream_unavailable", "the event stream kept failing")

    # -- inbox -----------------------------------------------------------------------------

    async def inbox(self) -> list[InboxItem]:
        """Every task waiting for the caller."""
        return await self._call("inbox")  # type: ignore[no-any-return]

    async def answer(
        self, item_id: str, *, approve: bool = False, feedback: str | None = None
    ) -> FeedbackResult:
        """Answer an inbox item."""
        body = _drop_none({"approve": approve, "feedback": feedback})
        return await self._call("answer", path={"item_id": item_id}, json_body=body)  # type: ignore[no-any-return]

    # -- schedules -------------------------------------------------------------------------

    async def create_schedule(
        self,
        timetable: dict[str, Any],
        *,
        crew_id: str | None = None,
        spec: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Schedule:
        """A crew on a timetable (``cron``, ``interval_seconds``, ``overlap``, ...)."""
        body = _drop_none(
            {
                "crew_id": crew_id,
                "spec": spec,
                "inputs": inputs or {},
                "name": name,
                "timetable": timetable,
            }
        )
        return await self._call("create_schedule", json_body=body)  # type: ignore[no-any-return]

    async def list_schedules(self, offset: int = 0, limit: int = 20) -> Page[Schedule]:
        """The caller's schedules."""
        return await self._call(  # type: ignore[no-any-return]
            "list_schedules", params={"offset": offset, "limit": limit}
        )

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """Timetable, next and recent runs."""
        return await self._call("get_schedule", path={"schedule_id": schedule_id})  # type: ignore[no-any-return]

    async def update_schedule(self, schedule_id: str, **changes: Any) -> Schedule:
        """Change ``timetable``, ``inputs`` or ``name``."""
        return await self._call(  # type: ignore[no-any-return]
            "update_schedule", path={"schedule_id": schedule_id}, json_body=changes
        )

    async def pause_schedule(self, schedule_id: str) -> ScheduleAction:
        """No runs until unpaused."""
        return await self._call("pause_schedule", path={"schedule_id": schedule_id})  # type: ignore[no-any-return]

    async def unpause_schedule(self, schedule_id: str) -> ScheduleAction:
        """Runs resume."""
        return await self._call("unpause_schedule", path={"schedule_id": schedule_id})  # type: ignore[no-any-return]

    async def trigger_schedule(self, schedule_id: str) -> ScheduleAction:
        """One run now."""
        return await self._call("trigger_schedule", path={"schedule_id": schedule_id})  # type: ignore[no-any-return]

    async def backfill_schedule(
        self, schedule_id: str, start_at: datetime, end_at: datetime
    ) -> ScheduleAction:
        """The runs of a past range, now."""
        return await self._call(  # type: ignore[no-any-return]
            "backfill_schedule",
            path={"schedule_id": schedule_id},
            json_body={"start_at": start_at.isoformat(), "end_at": end_at.isoformat()},
        )

    async def delete_schedule(self, schedule_id: str) -> None:
        """No more runs."""
        await self._call("delete_schedule", path={"schedule_id": schedule_id})

    # -- webhooks --------------------------------------------------------------------------

    async def create_webhook(
        self,
        url: str,
        events: list[str],
        *,
        crew_id: str | None = None,
        schedule_id: str | None = None,
        description: str = "",
    ) -> Webhook:
        """Subscribe; the result's ``secret`` is shown this once."""
        body = _drop_none(
            {
                "url": url,
                "events": events,
                "crew_id": crew_id,
                "schedule_id": schedule_id,
                "description": description,
            }
        )
        return await self._call("create_webhook", json_body=body)  # type: ignore[no-any-return]

    async def list_webhooks(self) -> Page[Webhook]:
        """The caller's subscriptions."""
        return await self._call("list_webhooks")  # type: ignore[no-any-return]

    async def delete_webhook(self, webhook_id: str) -> None:
        """Unsubscribe."""
        await self._call("delete_webhook", path={"webhook_id": webhook_id})

    async def deliveries(self, webhook_id: str) -> Page[Delivery]:
        """The delivery log, newest first."""
        return await self._call("deliveries", path={"webhook_id": webhook_id})  # type: ignore[no-any-return]

    async def redeliver(self, webhook_id: str, delivery_id: str) -> Redelivery:
        """Deliver an event again."""
        return await self._call(  # type: ignore[no-any-return]
            "redeliver", path={"webhook_id": webhook_id, "delivery_id": delivery_id}
        )
