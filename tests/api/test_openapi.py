"""The published OpenAPI document says what the server accepts (issue 11, item 13).

Every body below is sent to the server *and* checked against the schema the document
publishes for it: a generated client or the /api/docs playground must accept exactly what
the server accepts, no free-form objects, no missing constraints.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.api.test_auth import assert_error
from tests.fixtures.api import offline_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def document(client):
    response = await client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


def validator(document: dict, ref: str) -> jsonschema.Draft202012Validator:
    """A validator for ``ref`` with the document's components in reach of its ``$ref``s."""
    schema = {"$ref": ref, "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def body_schema(document: dict, path: str, method: str) -> dict:
    return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def yaml_crew() -> dict:
    """The example crew as a YAML user writes it: names from roles, ``llm`` shorthands."""
    return yaml.safe_load((ROOT / "examples" / "research_crew.yaml").read_text())


async def test_crew_bodies_are_the_crew_spec_schema(document):
    crew_spec = {"$ref": "#/components/schemas/CrewSpec"}
    assert body_schema(document, "/api/v1/crews", "post") == crew_spec
    assert body_schema(document, "/api/v1/crews/{crew_id}", "put") == crew_spec
    schemas = document["components"]["schemas"]
    assert schemas["CrewSpec"]["required"] == ["name", "agents", "tasks"]
    assert {"agents", "tasks", "process", "retry", "timeout"} <= set(
        schemas["CrewSpec"]["properties"]
    )
    assert {"role", "goal", "llm", "tools", "model"} <= set(schemas["AgentSpec"]["properties"])
    assert {"description", "expected_output", "agent", "retry"} <= set(
        schemas["TaskSpec"]["properties"]
    )
    assert schemas["ExecutionCreate"]["properties"]["spec"]["anyOf"][0] == crew_spec
    assert schemas["CrewOut"]["properties"]["spec"] == crew_spec


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(offline_spec(), id="json"),
        pytest.param(yaml_crew(), id="yaml-example"),
        pytest.param(
            {
                "name": "shorthand",
                "agents": [{"role": "Analyst", "goal": "g", "llm": "offline/a"}],
                "tasks": [
                    {"name": "t", "description": "d", "expected_output": "o", "agent": "analyst"}
                ],
            },
            id="llm-string",
        ),
        pytest.param(
            {
                "name": "shorthand",
                "agents": [{"name": "a", "role": "A", "goal": "g", "model": "offline/a"}],
                "tasks": [{"name": "t", "description": "d", "expected_output": "o", "agent": "a"}],
            },
            id="model-key",
        ),
    ],
)
async def test_what_the_server_accepts_the_schema_accepts(client, alice, document, spec):
    validator(document, "#/components/schemas/CrewSpec").validate(spec)
    created = await client.post("/api/v1/crews", json=spec, headers=alice)
    assert created.status_code == 201, created.text
    validator(document, "#/components/schemas/CrewOut").validate(created.json())


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"name": "x"}, id="no-agents"),
        pytest.param({**offline_spec(), "priority": 1}, id="unknown-field"),
        pytest.param({**offline_spec(), "process": "parallel"}, id="bad-process"),
        pytest.param(
            {**offline_spec(), "agents": [{**offline_spec()["agents"][0], "name": "a b"}]},
            id="bad-name",
        ),
    ],
)
async def test_what_the_server_refuses_the_schema_refuses(client, alice, document, spec):
    assert not validator(document, "#/components/schemas/CrewSpec").is_valid(spec)
    assert_error(await client.post("/api/v1/crews", json=spec, headers=alice), 422, "invalid_spec")


FEEDBACK_OK = [
    {"approve": True},
    {"approve": True, "task": "step0"},
    {"feedback": "shorter, please"},
    {"approve": False, "feedback": "again"},
    {"approve": True, "feedback": None},
]
FEEDBACK_BAD = [
    {},
    {"approve": "yes"},
    {"approve": False},
    {"feedback": "   "},
    {"approve": True, "feedback": "both"},
    {"approve": True, "extra": 1},
]


async def test_feedback_schema_matches_the_server(client, alice, document):
    schema = validator(document, "#/components/schemas/FeedbackIn")
    path = f"/api/v1/executions/{'0' * 32}/feedback"
    for body in FEEDBACK_OK:
        assert schema.is_valid(body), body
        # Valid bodies get past validation: the execution is simply not found.
        assert_error(await client.post(path, json=body, headers=alice), 404, "not_found")
    for body in FEEDBACK_BAD:
        assert not schema.is_valid(body), body
        response = await client.post(path, json=body, headers=alice)
        assert_error(response, 422, "validation_error")


async def test_execution_start_schema_matches_the_server(client, alice, document):
    schema = validator(document, "#/components/schemas/ExecutionCreate")
    good = [
        {"crew_id": "0" * 32},
        {"crew_id": "0" * 32, "spec": None, "inputs": {"topic": "x"}},
    ]
    for body in good:
        assert schema.is_valid(body), body
        response = await client.post("/api/v1/executions", json=body, headers=alice)
        assert_error(response, 404, "not_found")  # past validation: no such crew
    assert schema.is_valid({"spec": offline_spec()})
    bad = [
        {},
        {"crew_id": "0" * 32, "spec": offline_spec()},
        {"crew_id": None, "spec": None},
        {"crew_id": "not-an-id"},
        {"spec": offline_spec(), "priority": 1},
        {"spec": offline_spec(), "inputs": "not a mapping"},
    ]
    for body in bad:
        assert not schema.is_valid(body), body
        response = await client.post("/api/v1/executions", json=body, headers=alice)
        assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("PATCH", f"/api/v1/crews/{'0' * 32}", "GET, PUT, DELETE"),
        ("DELETE", "/api/v1/crews", "GET, POST"),
        ("GET", f"/api/v1/executions/{'0' * 32}/cancel", "POST"),
        ("PUT", "/api/v1/executions", "GET, POST"),
    ],
)
async def test_405_lists_every_allowed_method(client, alice, method, path, allowed):
    response = await client.request(method, path, headers=alice)
    error = assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed
    assert allowed in error["message"]


async def test_the_documented_credentials_are_the_ones_the_server_asks_for(client, document):
    """The principal dependency reads its credentials from the headers itself, and the
    document names them on each operation that needs them: every operation documented with
    ``security`` (and ``X-Kasal-Group``) answers 401 without credentials, every other one
    does not."""
    schemes = document["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "description": "an API key (kasal_...)",
        "in": "header",
        "name": "X-API-Key",
    }
    secured = public = 0
    for path, operations in document["paths"].items():
        url = re.sub(r"\{[^}]+\}", "0" * 32, path)
        for method, operation in operations.items():
            headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            response = await client.request(method.upper(), url)
            if operation.get("security"):
                secured += 1
                assert operation["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
                assert "X-Kasal-Group" in headers, (method, path)
                assert_error(response, 401, "unauthorized")
            else:
                public += 1
                assert "X-Kasal-Group" not in headers, (method, path)
                assert response.status_code != 401, (method, path, response.text)
    assert secured > 30 and public >= 4
    assert [tag["name"] for tag in document["tags"]][:3] == ["auth", "crews", "executions"]
