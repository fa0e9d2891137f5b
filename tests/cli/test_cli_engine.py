"""The engine's CLI as a user runs it: send --wait, status, run (with the parent_success check)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from angora_testkit import CLI, System, write_config

JOBS = """
- {name: first, triggers: [cli.go], command: "true", messages: [cli.next]}
- {name: second, triggers: [cli.next], command: "true", messages: [cli.last]}
- {name: join, triggers: [cli.last], command: "true", parent_success: true}
- {name: broken, triggers: [cli.bad], command: [sh, -c, 'echo one; echo two; echo why it broke >&2; exit 3'], replay: 0}
"""


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    s = System(angora_env, write_config(tmp_path / "config", JOBS), tmp_path)
    s.start("matcher")
    s.start("worker")
    yield s
    s.stop()


def angora(s: System, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=s.env, capture_output=True, text=True, timeout=120)


def test_send_wait_prints_each_outcome_and_succeeds(system: System) -> None:
    out = angora(system, "send", "cli.go", "-p", "A=1", "--wait", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    run_id = lines[0]
    assert {"first", "second", "join"} <= {ln.split()[0] for ln in lines[1:-1]}
    assert lines[-1] == f"run {run_id}: succeeded"
    status = angora(system, "status", run_id)
    assert "succeeded" in status.stdout and "join" in status.stdout


def test_send_wait_exits_non_zero_when_a_job_fails_and_says_why(system: System) -> None:
    out = angora(system, "send", "cli.bad", "--wait", "--timeout", "60")
    assert out.returncode == 1
    assert "broken" in out.stdout and out.stdout.strip().endswith("failed")
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == ["broken", "failed"])
    assert lines[at + 1].startswith("    exit 3 after 1 attempt; the whole output: angora logs ")
    xid = lines[at + 1].split()[-1]
    assert lines[at + 2:at + 5] == ["    | one", "    | two", "    | why it broke"]
    assert angora(system, "logs", xid).stdout.splitlines() == ["one", "two", "why it broke"]
    status = angora(system, "status", lines[0]).stdout.splitlines()  # the same, under the job's line
    at = next(i for i, line in enumerate(status) if line.split()[:2] == ["broken", "failed"])
    assert status[at + 1:at + 5] == [f"      exit 3 after 1 attempt; the whole output: angora logs {xid}",
                                     "      | one", "      | two", "      | why it broke"]


def test_bad_input_is_a_clear_error_not_a_traceback(system: System) -> None:
    out = angora(system, "send", "bad topic")
    assert out.returncode != 0 and "Traceback" not in out.stderr and "topic" in out.stderr
    out = angora(system, "send", "ok", "-p", "novalue")
    assert out.returncode != 0 and "KEY=VALUE" in out.stderr


def test_run_by_hand_and_parent_success_refusal(system: System) -> None:
    out = angora(system, "run", "first")
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[0]
    system.wait_run(run_id)
    refused = angora(system, "run", "join")
    assert refused.returncode != 0 and "parent_success" in refused.stderr and "Traceback" not in refused.stderr
    fresh = angora(system, "send", "cli.bad", "--wait", "--timeout", "60")
    bad_run = fresh.stdout.split()[0]
    refused = angora(system, "run", "join", "--run-id", bad_run)
    assert refused.returncode != 0 and "second" in refused.stderr
    ok = angora(system, "run", "join", "--run-id", run_id)
    assert ok.returncode == 0, ok.stderr
    missing = angora(system, "run", "nope")
    assert missing.returncode != 0 and "no job named" in missing.stderr
