"""The route template metrics and the audit log name a request by: looked up by the route
FastAPI served, matched again only where a lookup cannot tell."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.observability import MetricsMiddleware, route_template
from kasal import metrics
from tests.fixtures.api import asgi_client


def _app() -> tuple[FastAPI, APIRouter, APIRouter]:
    things = APIRouter()

    @things.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict:
        return {"id": thing_id}

    shared = APIRouter()

    @shared.get("/shared/{item}")
    async def item(item: str) -> dict:
        return {"item": item}

    app = FastAPI()
    app.add_middleware(MetricsMiddleware)
    app.include_router(things, prefix="/api/v9")
    app.include_router(shared, prefix="/api/v9/a")
    app.include_router(shared, prefix="/api/v9/b")  # one route object, two templates
    return app, things, shared


def _scope(app: FastAPI, path: str, route: object | None = None) -> dict:
    scope = {"type": "http", "method": "GET", "path": path, "app": app, "root_path": ""}
    if route is not None:
        scope["route"] = route
    return scope


def test_the_served_route_names_its_template_without_matching_the_path():
    app, things, _shared = _app()
    served = things.routes[0]
    # The path matches nothing: only the route FastAPI left in the scope can name it.
    assert route_template(_scope(app, "/elsewhere", served)) == "/api/v9/things/{thing_id}"
    assert route_template(_scope(app, "/api/v9/things/7")) == "/api/v9/things/{thing_id}"
    assert route_template(_scope(app, "/elsewhere")) is None


def test_a_route_included_twice_is_named_by_the_path_it_served():
    app, _things, shared = _app()
    served = shared.routes[0]
    assert route_template(_scope(app, "/api/v9/a/shared/x", served)) == "/api/v9/a/shared/{item}"
    assert route_template(_scope(app, "/api/v9/b/shared/x", served)) == "/api/v9/b/shared/{item}"


def _count(route: str) -> float:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if (
                sample.name == "kasal_http_request_duration_seconds_count"
                and sample.labels.get("route") == route
            ):
                return sample.value
    return 0.0


async def test_requests_are_counted_under_their_templates():
    app, _things, _shared = _app()
    before = {r: _count(r) for r in ("/api/v9/things/{thing_id}", "/api/v9/b/shared/{item}")}
    async with asgi_client(app) as client:
        for path in ("/api/v9/things/1", "/api/v9/things/2", "/api/v9/b/shared/z"):
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/api/v9/nothing")).status_code == 404
    assert _count("/api/v9/things/{thing_id}") - before["/api/v9/things/{thing_id}"] == 2
    assert _count("/api/v9/b/shared/{item}") - before["/api/v9/b/shared/{item}"] == 1
