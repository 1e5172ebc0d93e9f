"""The typed REST client against the OpenAPI document and a live API; Execution.attach to
an execution started elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any, get_args

import httpx
import pytest
from pydantic import BaseModel

from api.main import create_app
from kasal.api_client import ROUTES, ExecutionPending, ExecutionResult, KasalAPI
from kasal.exceptions import NotFoundError
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    offline_spec,
    running_app,
)


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _model_of(model: Any) -> type[BaseModel] | None:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    args = get_args(model)
    return _model_of(args[0]) if args else None


def test_every_client_call_matches_the_openapi_document(settings):
    document = create_app(api_settings_for(settings)).openapi()
    assert len(ROUTES) >= 25
    for name, (method, path, model) in ROUTES.items():
        assert path in document["paths"], f"{name}: {path} is not an API path"
        operation = document["paths"][path].get(method.lower())
        assert operation is not None, f"{name}: {method} {path} is not an operation"
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert "{" + parameter["name"] + "}" in path
        if model is None:
            continue
        success = next(c for c in ("200", "201", "202") if c in operation["responses"])
        content = operation["responses"][success]["content"]["application/json"]
        schema = _resolve(document, content["schema"])
        if schema.get("type") == "array":
            schema = _resolve(document, schema["items"])
            target = _model_of(model)
        elif "items" in schema.get("properties", {}) and get_args(model):
            # A page: check the page and the items' model.
            items = _resolve(document, schema["properties"]["items"]["items"])
            item_model = _model_of(get_args(model)[0]) if get_args(model) else None
            item_model = item_model or _model_of(model.model_fields["items"].annotation)
            assert item_model is not None
            missing = set(items.get("required", [])) - set(item_model.model_fields)
            assert not missing, f"{name}: items lack {missing}"
            target = model
        else:
            target = _model_of(model)
        assert target is not None
        fields = set(target.model_fields)
        required = set(schema.get("required", []))
        assert required <= fields, f"{name}: the client's model lacks {required - fields}"
        unknown = {f for f, info in target.model_fields.items() if info.is_required()} - set(
            schema.get("properties", {})
        )
        assert not unknown, f"{name}: the client requires fields the API never sends: {unknown}"


async def test_the_client_runs_a_crew_end_to_end(settings, worker):
    async with running_app(api_settings_for(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with KasalAPI("http://test", transport=transport) as api:
            await api.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            started = await api.start_execution(spec=offline_spec(tasks=2, latency_ms=300))
            pending = await api.result(started.execution_id, wait=0.2)
            assert isinstance(pending, ExecutionPending)
            result = await api.result(started.execution_id, wait=30)
            assert isinstance(result, ExecutionResult) and result.status == "completed"
            events = [e async for e in api.events(started.execution_id)]
            assert [e.offset for e in events] == list(range(len(events)))
            later = [e async for e in api.events(started.execution_id, from_offset=3)]
            assert later == events[3:]
            counts = await api.execution_counts()
            assert counts.counts == {"completed": 1}
            page = await api.list_executions(q="crew")
            assert page.items[0].id == started.execution_id
            await api.delete_execution(started.execution_id)
            from kasal.api_client import APIError

            with pytest.raises(APIError) as error:
                await api.get_execution(started.execution_id)
            assert error.value.status == 404 and error.value.code == "not_found"


async def test_the_client_works_with_an_api_key_in_a_group(settings, worker):
    """Issue 10: a program holds an API key, not a password; ``group`` picks the group."""
    from kasal.api_client import APIError

    async with running_app(api_settings_for(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with KasalAPI("http://test", transport=transport) as admin:
            await admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            headers = admin._headers()
            raw = admin._http
            group = (await raw.get("/api/v1/groups", headers=headers)).json()[0]["id"]
            made = await raw.post(
                "/api/v1/keys", json={"name": "prog", "scopes": ["run"]}, headers=headers
            )
            assert made.status_code == 201, made.text
        async with KasalAPI(
            "http://test", token=made.json()["key"], group=group, transport=transport
        ) as api:
            started = await api.start_execution(spec=offline_spec(tasks=1))
            result = await api.result(started.execution_id, wait=30)
            assert isinstance(result, ExecutionResult) and result.status == "completed"
            assert (await api.get_execution(started.execution_id)).id == started.execution_id
            # A run key deletes nothing: that is an editor's.
            with pytest.raises(APIError) as error:
                await api.delete_execution(started.execution_id)
            assert error.value.status == 403 and error.value.code == "forbidden"


async def test_attach_to_an_execution_started_elsewhere(
    settings, temporal_client, task_queue, worker
):
    from kasal import Execution
    from kasal.client import start_execution
    from tests.helpers import crew

    spec = crew(
        [
            {"name": "one", "description": "First"},
            {"name": "two", "description": "Second", "human_input": True},
        ],
        agents=[{"name": "analyst", "role": "A", "goal": "g", "llm": "offline/x"}],
    )
    started = await start_execution(temporal_client, spec, task_queue=task_queue)
    attached = await asyncio.to_thread(Execution.attach, started.id, settings)
    assert attached.id == started.id

    async def waiting():
        for _ in range(300):
            if found := await asyncio.to_thread(attached.waiting):
                return found
            await asyncio.sleep(0.1)
        raise AssertionError("nothing waits")

    assert (await waiting())[0].task == "two"
    status = await asyncio.to_thread(attached.status)
    assert status.state == "waiting_for_input"
    verdict = await asyncio.to_thread(attached.feedback, approve=True)
    assert verdict.approved
    result = await asyncio.to_thread(attached.result, 30)
    assert [t.name for t in result.tasks] == ["one", "two"]
    events = await asyncio.to_thread(lambda: list(attached.events(2)))
    assert events[0].offset == 2 and events[-1].type == "execution_completed"
    with pytest.raises(NotFoundError):
        await asyncio.to_thread(Execution.attach, "0" * 32, settings)
