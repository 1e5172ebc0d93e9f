"""Crews: CRUD, pagination, validation, ownership, and every kind of bad input."""

from __future__ import annotations

import pytest

from tests.api.test_auth import assert_error
from tests.fixtures.api import offline_spec

CREWS = "/api/v1/crews"


async def test_crud(client, alice):
    created = await client.post(CREWS, json=offline_spec("research"), headers=alice)
    assert created.status_code == 201, created.text
    crew = created.json()
    assert crew["name"] == "research" and len(crew["id"]) == 32
    assert crew["spec"]["agents"][0]["llm"]["model"] == "offline/analyst"
    got = await client.get(f"{CREWS}/{crew['id']}", headers=alice)
    assert got.json() == crew
    replaced = await client.put(
        f"{CREWS}/{crew['id']}", json=offline_spec("renamed", tasks=3), headers=alice
    )
    assert replaced.status_code == 200
    assert replaced.json()["name"] == "renamed" and len(replaced.json()["spec"]["tasks"]) == 3
    deleted = await client.delete(f"{CREWS}/{crew['id']}", headers=alice)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(await client.get(f"{CREWS}/{crew['id']}", headers=alice), 404, "not_found")
    assert_error(await client.delete(f"{CREWS}/{crew['id']}", headers=alice), 404, "not_found")


async def test_list_is_paginated_newest_first(client, alice):
    for index in range(5):
        await client.post(CREWS, json=offline_spec(f"crew{index}"), headers=alice)
    page = (await client.get(CREWS, params={"offset": 1, "limit": 2}, headers=alice)).json()
    assert page["total"] == 5 and page["offset"] == 1 and page["limit"] == 2
    assert [c["name"] for c in page["items"]] == ["crew3", "crew2"]
    assert_error(
        await client.get(CREWS, params={"limit": 0}, headers=alice), 422, "validation_error"
    )
    assert_error(
        await client.get(CREWS, params={"limit": 1000}, headers=alice), 422, "validation_error"
    )
    assert_error(
        await client.get(CREWS, params={"offset": "x"}, headers=alice), 422, "validation_error"
    )


async def test_another_users_crew_is_not_found(client, alice, bob):
    crew = (await client.post(CREWS, json=offline_spec("mine"), headers=alice)).json()
    path = f"{CREWS}/{crew['id']}"
    assert_error(await client.get(path, headers=bob), 404, "not_found")
    assert_error(await client.put(path, json=offline_spec("theirs"), headers=bob), 404, "not_found")
    assert_error(await client.delete(path, headers=bob), 404, "not_found")
    assert (await client.get(CREWS, headers=bob)).json()["total"] == 0
    assert (await client.get(path, headers=alice)).json()["name"] == "mine"
    assert_error(await client.get(CREWS), 401, "unauthorized")


async def test_invalid_spec_is_422_with_details_and_nothing_written(client, alice):
    crew = (await client.post(CREWS, json=offline_spec("kept"), headers=alice)).json()
    bad = offline_spec("broken")
    bad["tasks"][0]["agent"] = "ghost"
    response = await client.post(CREWS, json=bad, headers=alice)
    error = assert_error(response, 422, "invalid_spec")
    assert "ghost" in error["message"] and isinstance(error["details"], list)
    unknown_field = offline_spec("x") | {"colour": "blue"}
    assert_error(await client.post(CREWS, json=unknown_field, headers=alice), 422, "invalid_spec")
    replaced = await client.put(f"{CREWS}/{crew['id']}", json=bad, headers=alice)
    assert_error(replaced, 422, "invalid_spec")
    assert (await client.get(f"{CREWS}/{crew['id']}", headers=alice)).json() == crew
    assert (await client.get(CREWS, headers=alice)).json()["total"] == 1


@pytest.mark.parametrize(
    "content,headers,status,code",
    [
        (b'{"name": "x", ', {"content-type": "application/json"}, 400, "malformed_json"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "validation_error"),
        (b'"a string"', {"content-type": "application/json"}, 422, "validation_error"),
        (b"", {"content-type": "application/json"}, 422, "validation_error"),
    ],
)
async def test_malformed_bodies(client, alice, content, headers, status, code):
    response = await client.post(CREWS, content=content, headers={**alice, **headers})
    assert_error(response, status, code)
    assert (await client.get(CREWS, headers=alice)).json()["total"] == 0


async def test_oversized_body_is_413(client, alice, api_settings):
    spec = offline_spec("big")
    spec["description"] = "x" * (api_settings.max_body_bytes + 1)
    response = await client.post(CREWS, json=spec, headers=alice)
    error = assert_error(response, 413, "payload_too_large")
    assert error["details"] == {"max_bytes": api_settings.max_body_bytes}

    async def chunked():  # no Content-Length: the limit is counted as the body arrives
        for _ in range(20):
            yield b" " * (api_settings.max_body_bytes // 10)

    response = await client.post(CREWS, content=chunked(), headers=alice)
    assert_error(response, 413, "payload_too_large")
    assert (await client.get(CREWS, headers=alice)).json()["total"] == 0


@pytest.mark.parametrize("bad_id", ["123", "Z" * 32, "0" * 33, "../etc"])
async def test_bad_ids_are_422(client, alice, bad_id):
    response = await client.get(f"{CREWS}/{bad_id}", headers=alice)
    assert response.status_code in (404, 422)
    assert response.json()["error"]["code"] in ("validation_error", "not_found")


async def test_unknown_routes_and_methods_share_the_error_shape(client, alice):
    assert_error(await client.get("/api/v1/nothing", headers=alice), 404, "not_found")
    assert_error(await client.patch(CREWS, headers=alice), 405, "method_not_allowed")
