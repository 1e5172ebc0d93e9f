"""The ``kasal`` command, run as users run it: a subprocess on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kasal.client import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "research_crew.yaml"


def kasal(*args: str, env: dict[str, str] | None = None, timeout: float = 180):
    provider_keys = ("OPENAI_API_KEY", "DATABRICKS_TOKEN", "DATABRICKS_HOST")
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("KASAL_") and k not in provider_keys
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=timeout,
    )


def test_run_example_on_the_embedded_default(tmp_path):
    """The main job: no Temporal configured, so the dev server and a worker start inside."""
    done = kasal(
        "run",
        str(EXAMPLE),
        "--input",
        "product=tea",
        "--json",
        env={
            "KASAL_DATA_DIR": str(tmp_path / "data"),
            "KASAL_EMBEDDED_PORT": str(free_port()),
            "KASAL_EMBEDDED_UI_PORT": str(free_port()),
        },
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert [t["name"] for t in result["tasks"]] == [
        "market_research",
        "competitor_pricing",
        "brief",
    ]
    assert "tea" in result["output"]
    assert "using the offline model" in done.stderr  # and it says so, and why
    assert "openai/gpt-4o-mini -> offline/gpt-4o-mini (OPENAI_API_KEY is not set)" in done.stderr
    assert "calculator" in done.stderr  # live progress showed the tool step
    assert (tmp_path / "data" / "temporal.db").is_file()  # history persisted in SQLite


def test_clear_errors_for_bad_input(tmp_path):
    missing = kasal("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nagents: []\ntasks: []\n")
    invalid = kasal("run", str(bad))
    assert invalid.returncode == 2
    assert "agents" in invalid.stderr and "at least 1 item" in invalid.stderr
    no_input = kasal("run", str(EXAMPLE), "--input", "oops")
    assert no_input.returncode == 2 and "key=value" in no_input.stderr
    unreachable = kasal(
        "run", str(EXAMPLE), env={"KASAL_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    )
    assert unreachable.returncode == 3 and "cannot reach Temporal" in unreachable.stderr
    no_server = kasal("worker")
    assert no_server.returncode == 3 and "KASAL_TEMPORAL_ADDRESS" in no_server.stderr


def test_validate_prints_the_normalised_spec():
    done = kasal("validate", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "market_research" in done.stdout and "research_analyst" in done.stdout


def test_dev_refuses_a_public_bind_with_the_default_secret():
    done = kasal("dev", "--host", "0.0.0.0", timeout=60)
    assert done.returncode == 2 and "KASAL_SECRET_KEY" in done.stderr


def test_detach_refuses_an_embedded_server_that_would_die_with_the_command(tmp_path):
    done = kasal(
        "run",
        str(EXAMPLE),
        "--detach",
        env={
            "KASAL_DATA_DIR": str(tmp_path / "data"),
            "KASAL_EMBEDDED_PORT": str(free_port()),
            "KASAL_EMBEDDED_UI_PORT": "0",
        },
    )
    assert done.returncode == 3 and "kasal dev" in done.stderr


def test_validate_prints_yaml_that_parses_back_to_the_same_spec(tmp_path):
    """Long lines stay whole: the output is a spec file, not text wrapped for a terminal."""
    import yaml

    from kasal.spec import CrewSpec

    long_goal = "Find: market insights, " * 12 + "# not a comment, and key: not a key"
    spec_file = tmp_path / "long.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "long_lines",
                "agents": [
                    {
                        "name": "analyst",
                        "role": "Research Analyst " * 8,
                        "goal": long_goal,
                        "model": "offline/analyst",
                    }
                ],
                "tasks": [
                    {
                        "name": "research",
                        "description": "Analyze competitor pricing for {product}. " * 10,
                        "expected_output": "A short report",
                        "agent": "analyst",
                    }
                ],
            },
            width=10_000,
        )
    )
    done = kasal("validate", str(spec_file), env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) > 80  # nothing was wrapped
    assert CrewSpec.from_data(yaml.safe_load(done.stdout)) == CrewSpec.from_file(spec_file)


def test_run_on_a_server_already_there_says_so_and_keeps_its_crew_to_itself(
    tmp_path, temporal_server
):
    """`kasal dev` (here: the session's server) already on the embedded port: used as is,
    and the crew runs on this command's own worker, on a queue of its own."""
    done = kasal(
        "run",
        str(EXAMPLE),
        "--input",
        "product=tea",
        env={
            "KASAL_DATA_DIR": str(tmp_path / "data"),
            "KASAL_EMBEDDED_PORT": str(temporal_server.port),
            "KASAL_EMBEDDED_UI_PORT": "0",
        },
    )
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert f"Temporal at {temporal_server.address}" in said
    assert "not started by this process" in said
    assert "task queue kasal-crews.local-" in said and "run only here" in said
    assert not (tmp_path / "data" / "temporal.db").exists()  # no second server


def test_validate_refuses_what_no_worker_could_resolve(tmp_path):
    """Unknown tools and providers and a disallowed base_url fail here, not minutes into a run."""
    import yaml

    spec_file = tmp_path / "unrunnable.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "unrunnable",
                "agents": [
                    {
                        "name": "a",
                        "role": "A",
                        "goal": "g",
                        "tools": ["calculator", "no_such_tool"],
                        "llm": {"model": "nosuch/model"},
                    },
                    {
                        "name": "b",
                        "role": "B",
                        "goal": "g",
                        "llm": {"model": "compatible/x", "base_url": "http://10.1.2.3/v1"},
                    },
                ],
                "tasks": [{"name": "t", "description": "d", "expected_output": "o", "agent": "a"}],
            }
        )
    )
    done = kasal("validate", str(spec_file), env={"KASAL_LLM_BASE_URLS": "[]"})
    assert done.returncode == 2, done.stderr
    for field in ("agents.0.tools.1", "agents.0.llm.model", "agents.1.llm.base_url"):
        assert field in done.stderr
    assert "no_such_tool" in done.stderr and "nosuch" in done.stderr
