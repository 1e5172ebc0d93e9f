"""CrewAI projects as they are: ``kasal run DIR --offline`` and ``kasal validate``."""

from __future__ import annotations

import json

import yaml

from kasal.client import free_port
from tests.cli.test_cli import kasal
from tests.fixtures.crewai_project import make_project


def test_kasal_run_a_crewai_project_offline_on_the_embedded_default(tmp_path):
    root = make_project(tmp_path / "projects")
    done = kasal(
        "run",
        str(root),
        "--offline",
        "--json",
        env={
            "KASAL_DATA_DIR": str(tmp_path / "data"),
            "KASAL_EMBEDDED_PORT": str(free_port()),
            "KASAL_EMBEDDED_UI_PORT": "0",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert [t["name"] for t in result["tasks"]] == ["research_task", "reporting_task"]
    # The inputs of the project's main.py run(), as `crewai run` uses them.
    assert "AI LLMs" in result["tasks"][0]["raw"]
    report = result["json_dict"]
    assert set(report) == {"title", "points", "score"} and 1 <= report["score"] <= 10
    # Every agent, manager and planner ran offline because it was asked for, and it says so.
    assert "offline (asked for)" in done.stderr
    assert "planning_completed" not in done.stderr  # the live view is people's, not JSON
    # output_file went under the files directory, with the placeholder filled in.
    written = tmp_path / "data" / "files" / "reports" / "AI LLMs.json"
    assert json.loads(written.read_text())["title"] == report["title"]
    reporting = result["tasks"][1]
    assert reporting["output_format"] == "pydantic" and reporting["attempts"] == 1


def validate(*args: str):
    """``kasal validate`` in this process (the project's import is paid once)."""
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, ["validate", *args])


def test_validate_a_project_and_a_bare_agents_tasks_pair(tmp_path):
    root = make_project(tmp_path / "projects")
    done = validate(str(root))
    assert done.exit_code == 0, done.output[-2000:]
    spec = yaml.safe_load(done.stdout)
    assert spec["project"] == root.name and spec["planning"] is True
    assert [t["name"] for t in spec["tasks"]] == ["research_task", "reporting_task"]
    assert spec["tasks"][1]["output_pydantic"]["title"] == "Report"
    config = root / "src" / root.name / "config"
    pair = validate(str(config / "agents.yaml"), str(config / "tasks.yaml"))
    assert pair.exit_code == 0, pair.output[-2000:]
    assert [a["name"] for a in yaml.safe_load(pair.stdout)["agents"]] == [
        "researcher",
        "reporting_analyst",
    ]
    (config / "tasks.yaml").write_text("research_task:\n  description: d\n  agent: nobody\n")
    bad = validate(str(config / "agents.yaml"), str(config / "tasks.yaml"))
    assert bad.exit_code == 2 and "nobody" in bad.output


def test_a_project_hook_kasal_cannot_run_is_refused_with_the_reason(tmp_path):
    root = make_project(tmp_path / "projects")
    crew_py = root / "src" / root.name / "crew.py"
    text = crew_py.read_text().replace(
        "from crewai.project import CrewBase, agent, crew, task",
        "from crewai.project import CrewBase, agent, before_kickoff, crew, task",
    )
    text = text.replace(
        "    @agent\n    def researcher",
        "    @before_kickoff\n    def prepare(self, inputs):\n        return inputs\n\n"
        "    @agent\n    def researcher",
    )
    crew_py.write_text(text)
    done = validate(str(root))
    assert done.exit_code == 2 and "prepare" in done.output and "not run by Kasal" in done.output
