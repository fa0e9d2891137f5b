"""angora validate / jobs / graph / explain on real files."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from angora_rq.cli.group import main

GOOD = """
- {name: a, triggers: [go], command: "true", messages: [a.done]}
- {name: b, triggers: [a.done], command: "true", parent_success: true}
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_validate_good_and_bad(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "jobs.yml").write_text(GOOD)
    res = run("validate", "--config", str(tmp_path / "ok"))
    assert res.exit_code == 0 and "2 jobs, 0 schedules, 0 errors" in res.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "jobs.yml").write_text("- name: x\n  trigers: [go]\n  command: 'true'\n")
    res = run("validate", "--config", str(tmp_path / "bad"))
    assert res.exit_code == 1
    assert "jobs.yml:2:3: job 'x': unknown key 'trigers' (did you mean 'triggers'?)" in res.output
    assert "Traceback" not in res.output


def test_jobs_graph_explain(tmp_path: Path) -> None:
    (tmp_path / "jobs.yml").write_text(GOOD)
    assert "a.done" in run("jobs", "--config", str(tmp_path)).output
    data = json.loads(run("graph", "--config", str(tmp_path), "--format", "json").output)
    assert data["edges"] == [{"from": "a", "to": "b", "topic": "a.done", "kind": "message"}]
    out = run("explain", "go", "--config", str(tmp_path)).output
    assert "'go' starts: a" in out and "b  <- a  [join" in out
    assert "starts no job" in run("explain", "nothing", "--config", str(tmp_path)).output


def test_commands_on_invalid_definitions_exit_1_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "jobs.yml").write_text("not: a list\n")
    res = CliRunner().invoke(main, ["jobs", "--config", str(tmp_path)])
    assert res.exit_code == 1 and "Traceback" not in res.output and "error" in res.output
