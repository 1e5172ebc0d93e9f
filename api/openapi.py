"""The OpenAPI document, with the real crew schema where routes take the body as data.

Crew bodies are parsed as plain mappings and validated by :meth:`CrewSpec.from_data` (one
``invalid_spec`` error naming every problem, and YAML-style shorthands accepted), so FastAPI
alone would document them as free-form objects. Here the document gets ``CrewSpec``'s own
JSON schema, widened by exactly the shorthands the validator accepts, and the crew routes
and ``ExecutionCreate.spec`` point at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api.deps import GROUP_HEADER, ID_PATTERN, api_key_header, bearer, get_principal
from kasal.spec import CrewSpec

REF = "#/components/schemas/{model}"
CREW_SPEC_REF = {"$ref": REF.format(model="CrewSpec")}
#: The order the docs list the route groups in (the routes are tried in another: see main.py).
TAG_ORDER = (
    "auth",
    "crews",
    "executions",
    "traces",
    "projects",
    "tools",
    "memory",
    "schedules",
    "webhooks",
    "inbox",
    "teams",
    "health",
)
#: What ``kasal.spec`` accepts as an agent or task name.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$"


def crew_spec_schemas() -> dict[str, dict[str, Any]]:
    """``CrewSpec`` and the models it uses, as OpenAPI component schemas.

    The shorthands :class:`kasal.spec.AgentSpec` accepts are part of the schema: ``model``
    beside (or instead of) ``llm``, ``llm`` as a model string, and ``name`` left out when
    ``role`` gives one.
    """
    schema = CrewSpec.model_json_schema(ref_template=REF)
    schemas: dict[str, dict[str, Any]] = schema.pop("$defs")
    schemas["CrewSpec"] = schema
    agent = schemas["AgentSpec"]
    agent["required"] = [name for name in agent["required"] if name != "name"]
    properties = agent["properties"]
    properties["name"]["description"] = "unique in the crew; default: made from the role"
    properties["llm"] = {
        "anyOf": [
            {"$ref": REF.format(model="LLMSpec")},
            {"type": "string", "description": "a model string: shorthand for {model: ...}"},
        ]
    }
    properties["model"] = {
        "type": "string",
        "description": "shorthand for llm.model, as in CrewAI ('openai/gpt-4o')",
    }
    for model in ("AgentSpec", "TaskSpec"):
        schemas[model]["properties"]["name"]["pattern"] = NAME_PATTERN
    return schemas


def _use_crew_spec(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in crew_spec_schemas().items():
        components.setdefault(name, schema)
    for path, operations in document.get("paths", {}).items():
        if not path.startswith("/api/v1/crews"):
            continue
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            body = content.get("application/json")
            if body is not None:
                examples = body["schema"].get("examples")
                operation["requestBody"]["description"] = (
                    "a CrewSpec; a crew YAML file loaded as data is one as it stands"
                )
                body["schema"] = dict(CREW_SPEC_REF)
                if examples:
                    body["examples"] = {
                        f"example{i}": {"value": value} for i, value in enumerate(examples)
                    }
    components["ExecutionCreate"]["properties"]["spec"] = {
        "anyOf": [dict(CREW_SPEC_REF), {"type": "null"}],
        "description": "an inline crew (instead of crew_id)",
    }
    components["CrewOut"]["properties"]["spec"] = dict(CREW_SPEC_REF)


def _needs_principal(dependant: Dependant) -> bool:
    return any(d.call is get_principal or _needs_principal(d) for d in dependant.dependencies)


def _document_credentials(
    document: dict[str, Any], included: Sequence[tuple[str, APIRouter]]
) -> None:
    """What :func:`api.deps.get_principal` reads from the headers itself, documented on each
    operation that needs a principal as FastAPI documents declared security dependencies:
    the bearer token or the API key (either one), and ``X-Kasal-Group``."""
    schemes = {
        scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
        for scheme in (bearer, api_key_header)
    }
    group = {
        "name": GROUP_HEADER,
        "in": "header",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", "pattern": ID_PATTERN}, {"type": "null"}],
            "description": "act in this group",
            "title": GROUP_HEADER,
        },
        "description": "act in this group",
    }
    for prefix, router in included:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            if not _needs_principal(route.dependant):
                continue
            for method in route.methods or ():
                operation = document["paths"][prefix + route.path_format][method.lower()]
                operation["security"] = [{name: []} for name in schemes]
                operation.setdefault("parameters", []).append(dict(group))
    document.setdefault("components", {})["securitySchemes"] = schemes


def install_openapi(app: FastAPI, included: Sequence[tuple[str, APIRouter]] = ()) -> None:
    """Serve the document with the crew schema and the credentials of each ``(prefix,
    router)`` in ``included`` in place (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=[{"name": name} for name in TAG_ORDER],
            )
            _use_crew_spec(document)
            _document_credentials(document, included)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
