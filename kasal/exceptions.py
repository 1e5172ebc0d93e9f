"""Domain errors. They carry no HTTP codes: ``api/errors.py`` maps them to responses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class KasalError(Exception):
    """Base of every error Kasal raises on purpose."""

    #: A stable machine-readable code, used by the API error body and by activities as
    #: the Temporal ``ApplicationError.type``.
    code = "kasal_error"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidSpecError(KasalError):
    """A crew spec that cannot run: which field, and why."""

    code = "invalid_spec"

    @classmethod
    def from_validation(cls, exc: ValidationError) -> InvalidSpecError:
        """One readable error from every problem Pydantic found."""
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(root)"
            problems.append({"field": where, "message": err["msg"]})
        first = problems[0] if problems else {"field": None, "message": str(exc)}
        text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return cls(text, field=None if len(problems) != 1 else first["field"], details=problems)

    def __str__(self) -> str:
        if self.details:
            return self.message
        return super().__str__()


class UnknownToolError(InvalidSpecError):
    """A spec names a tool no registry on this worker knows."""

    code = "unknown_tool"


class UnknownModelError(InvalidSpecError):
    """A spec names an LLM provider or model that cannot be resolved."""

    code = "unknown_model"


class ProviderError(KasalError):
    """An LLM provider failed. ``retryable`` says whether trying again can help."""

    code = "provider_error"
    retryable = True


class ProviderAuthError(ProviderError):
    """The provider refused our credentials: retrying cannot fix it."""

    code = "provider_auth"
    retryable = False


class ProviderRateLimitError(ProviderError):
    """The provider asked us to slow down."""

    code = "provider_rate_limit"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderTimeoutError(ProviderError):
    """The provider did not answer in time."""

    code = "provider_timeout"


class ProviderUnavailableError(ProviderError):
    """The provider answered 5xx or could not be reached."""

    code = "provider_unavailable"


class TemporalUnavailableError(KasalError):
    """The configured Temporal server cannot be reached."""

    code = "temporal_unavailable"


class ExecutionFailedError(KasalError):
    """A crew execution ended in failure."""

    code = "execution_failed"


class AgentExecutionError(ExecutionFailedError):
    """An agent could not finish its task: raised by ``Agent.execute`` and by a crew's
    result when a task failed for good. Retried by the task's policy before that."""

    code = "agent_execution_error"
    retryable = True


class TaskTimeoutError(AgentExecutionError):
    """A task ran past its bound: the agent's ``max_execution_time`` in an attempt (retried
    like any timeout), or the task's Temporal timeouts."""

    code = "task_timeout"
    retryable = True


class GuardrailFailedError(AgentExecutionError):
    """A task's answers kept failing its guardrail after ``guardrail_max_retries`` redos.
    Not retried: a new attempt replays the same journaled answers."""

    code = "guardrail_failed"
    retryable = False


class ExecutionCancelledError(KasalError):
    """A crew execution was cancelled."""

    code = "execution_cancelled"


class NotFoundError(KasalError):
    """The thing asked for does not exist, or is not the caller's to see."""

    code = "not_found"


class ConflictError(KasalError):
    """The request conflicts with the current state."""

    code = "conflict"


class AuthError(KasalError):
    """Bad credentials or token."""

    code = "unauthorized"


class PermissionDeniedError(KasalError):
    """Authenticated, but not allowed."""

    code = "forbidden"


class UnrunnableSpecError(InvalidSpecError):
    """A valid spec names what no worker can resolve: a tool, an LLM provider, an endpoint.

    ``details`` lists each problem as ``{"field", "code", "message"}``.
    """

    code = "unrunnable_spec"


class InvalidRequestError(KasalError):
    """A request Kasal cannot act on as given (a webhook target it may not call, a
    timetable Temporal refuses): which field, and why."""

    code = "invalid_request"
