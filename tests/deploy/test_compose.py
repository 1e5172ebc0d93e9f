"""docker-compose.yml and the Dockerfile: no Docker engine here, so check their wiring."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from kasal.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def env(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def test_the_services_exist(services):
    assert set(services) == {"postgres", "temporal", "temporal-ui", "api", "worker"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")


def test_postgres_is_healthchecked_and_temporal_persists_to_it(services):
    check = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(check)
    temporal = services["temporal"]
    assert temporal["depends_on"]["postgres"]["condition"] == "service_healthy"
    temporal_env = env(temporal)
    assert temporal_env["DB"].startswith("postgres")
    assert temporal_env["POSTGRES_SEEDS"] == "postgres"
    assert temporal_env["POSTGRES_USER"] == env(services["postgres"])["POSTGRES_USER"]
    assert temporal_env["POSTGRES_PWD"] == env(services["postgres"])["POSTGRES_PASSWORD"]
    assert "7233:7233" in temporal["ports"]
    assert "health" in temporal["healthcheck"]["test"]
    assert env(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_api_and_worker_are_wired_by_environment(services):
    api, worker = services["api"], services["worker"]
    assert "api.main:app" in api["command"] and api["build"] == "."
    assert worker["command"] == ["kasal", "worker"] and worker["image"] == api["image"]
    assert worker["deploy"]["replicas"] == 2
    postgres = env(services["postgres"])
    fields = Settings.model_fields
    for service in (api, worker):
        variables = env(service)
        assert variables["KASAL_TEMPORAL_ADDRESS"] == "temporal:7233"
        url = variables["KASAL_DATABASE_URL"]
        assert url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in url
        assert url.endswith("/" + postgres["POSTGRES_DB"])
        assert f"{postgres['POSTGRES_USER']}:" in url
        assert variables["KASAL_ENV"] != "dev"  # so the API insists on a real secret
        for name in variables:  # every KASAL_* variable names a real setting
            if name.startswith("KASAL_"):
                assert name.removeprefix("KASAL_").lower() in fields, name
        assert service["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert env(api)["KASAL_SECRET_KEY"].startswith("${KASAL_SECRET_KEY:?")
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"  # migrated first
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_the_image_serves_both_roles():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1\d", dockerfile, re.M)
    for folder in ("kasal", "api", "activities", "workflows", "cli"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "api.main:app" in dockerfile and "USER kasal" in dockerfile
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["kasal"] == "cli.main:main"  # the worker's `kasal worker`
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "db/alembic.ini" in package_data["package-data"]["kasal"]  # workers migrate too


def test_temporal_reads_kasals_dynamic_config_with_the_embedded_servers_values(services):
    """The server the compose file runs gets the events cache Kasal's embedded server runs
    with (and which its tests and benchmarks measure): the file is mounted where
    DYNAMIC_CONFIG_FILE_PATH (relative to the image's /etc/temporal) points."""
    from kasal.client import EVENTS_CACHE_BYTES

    temporal = services["temporal"]
    mounts = {}
    for volume in temporal["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = ROOT / source
    path = "/etc/temporal/" + env(temporal)["DYNAMIC_CONFIG_FILE_PATH"]
    assert path in mounts, f"{path} is not mounted"
    config = yaml.safe_load(mounts[path].read_text())
    assert config == {"history.eventsCacheMaxSizeBytes": [{"value": EVENTS_CACHE_BYTES}]}
