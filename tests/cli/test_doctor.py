"""`angora doctor`: one report of every check, exit 1 on any error; run as a user runs it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from angora_rq.core.doctor import ERROR, OK, WARN, Finding, budget_findings, data_lost_finding, \
    definition_findings, exit_code, layout_finding, process_findings
from angora_rq.core.layout import LAYOUT
from angora_rq.processes.redis_server import free_port
from angora_testkit import CLI, System, wait_for, write_config

JOBS = """
- {name: a, triggers: [doc.a], command: "true"}
- {schedule: tick, every: 1h, message: doc.a}
"""


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "doctor", *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def env(angora_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return dict(angora_env, ANGORA_CONFIG=str(write_config(tmp_path / "config", JOBS)))


def test_no_roles_running_is_an_error_that_says_what_to_start(env: dict[str, str]) -> None:
    out = doctor(env)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "ok     definitions: 1 job(s), 1 schedule(s) in " in lines[0]
    assert any(x.startswith("ok     redis: redis://") and "answers: Redis " in x and ", primary" in x for x in lines)
    assert f"ok     data: no Angora data under prefix '{env['ANGORA_PREFIX']}' yet (a new deployment)" in lines
    assert any("error  processes: no matcher alive" in x and "`angora matcher`" in x for x in lines)
    assert any("error  processes: no worker alive" in x for x in lines)
    assert any("warn   processes: no scheduler alive: the 1 schedule(s) do not fire" in x for x in lines)


def test_a_running_deployment_passes_with_its_warnings(env: dict[str, str], tmp_path: Path) -> None:
    s = System(env, Path(env["ANGORA_CONFIG"]), tmp_path)
    try:
        for role in ("matcher", "worker", "scheduler"):
            s.start(role)
        s.wait_run(s.send("doc.a"))
        wait_for(lambda: doctor(env).returncode == 0, 30, what=f"a passing report ({s.logs()})")
        out = doctor(env, "--json")
    finally:
        s.stop()
    findings = json.loads(out.stdout)
    assert out.returncode == 0 and {f["level"] for f in findings} <= {OK, WARN}
    texts = [f["text"] for f in findings]
    assert "1 matcher(s) alive" in texts and "1 worker(s) alive" in texts
    assert any(t.startswith("1 scheduler(s) alive, ") and t.endswith(" leads") for t in texts)
    assert f"layout {LAYOUT} under prefix '{env['ANGORA_PREFIX']}', this release's" in texts
    # The tests' server writes no AOF: the warning a role logs as it starts is in the report too.
    assert any(f["level"] == WARN and "appendonly no" in f["text"] for f in findings)


def test_broken_definitions_are_an_error_that_names_where(env: dict[str, str], tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad", "- name: a\n  trigers: [a]\n  command: 'true'\n")
    out = doctor(dict(env, ANGORA_CONFIG=str(bad)))
    assert out.returncode == 1
    first = out.stdout.splitlines()[0]
    assert first.startswith("error  definitions: 2 error(s) in ") and "unknown key 'trigers'" in first
    assert ".yml:2:" in first  # file:line:col


def test_a_redis_that_does_not_answer_is_one_error_line(env: dict[str, str]) -> None:
    out = doctor(dict(env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    (line,) = [x for x in out.stdout.splitlines() if " redis: " in x]
    assert line.startswith("error  redis: ") and "does not answer" in line


def test_what_the_findings_say() -> None:
    assert exit_code([Finding(WARN, "a", "b")]) == 0 and exit_code([Finding(OK, "a", "b"), Finding(ERROR, "a", "b")])
    assert layout_finding(LAYOUT - 1, "p").level == ERROR and "angora migrate" in layout_finding(LAYOUT - 1, "p").text
    assert layout_finding(LAYOUT + 1, "p").level == ERROR and layout_finding(None, "p").level == OK
    assert data_lost_finding({"times": 0, "last": None}) is None
    lost = data_lost_finding({"times": 2, "last": 10})
    assert lost is not None and lost.level == ERROR
    assert "2 time(s), the last found at 1970-01-01 00:00:10 UTC" in lost.text
    levels = [f.level for f in budget_findings({
        "work": {"ratio": 0.5, "full": False}, "memory": {"ratio": 0.85, "full": False}})]
    assert levels == [OK, WARN]
    assert [f.level for f in budget_findings({"work": {"ratio": 1.0, "full": True}, "memory": {}})] == [ERROR, OK]
    assert [f.level for f in process_findings({"matcher": 2, "worker": 1}, "", 0)] == [OK, OK]  # no schedules
    many = definition_findings(0, 0, [f"f.yml:{i}:1: bad" for i in range(7)], [], "cfg")
    assert many[0].level == ERROR and "and 2 more" in many[0].text and "f.yml:4:1" in many[0].text
