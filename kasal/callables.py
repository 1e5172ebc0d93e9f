"""Functions given to the facade (guardrails, callbacks), registered in its process.

A crew spec is data and never carries code. A function given to ``kasal.Task`` or
``kasal.Crew`` stays in the process that built the crew, under a key the spec carries; that
process's own worker (the facade's, on a task queue of its own) resolves it. Any other
worker refuses the key with a clear error: functions that must run anywhere belong in a
CrewAI project, whose code every worker of it imports (``kasal worker --project DIR``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kasal.exceptions import InvalidSpecError

_REGISTRY: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()


def register_callable(fn: Callable[..., Any]) -> str:
    """Keep ``fn`` in this process; returns the key a spec carries."""
    if not callable(fn):
        raise InvalidSpecError(f"{fn!r} is not callable")
    name = getattr(fn, "__qualname__", type(fn).__name__)
    key = f"{getattr(fn, '__module__', '?')}.{name}#{id(fn):x}"
    with _lock:
        _REGISTRY[key] = fn
    return key


def resolve_callable(key: str, field: str) -> Callable[..., Any]:
    """The function registered under ``key``; a non-retryable spec error if it is not here."""
    try:
        return _REGISTRY[key]
    except KeyError:
        raise InvalidSpecError(
            f"{key} was given to the facade in another process, and functions cannot travel "
            "in a crew spec: run the crew with the facade's in-process worker, or put the "
            "function in a CrewAI project served by `kasal worker --project DIR`",
            field=field,
        ) from None
