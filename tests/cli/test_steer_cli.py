"""The CLI steers what the UI steers: kill, retry, skip, cancel [--kill], logs [--follow], with --json, against
real matcher and worker processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from angora_rq.cli.steer_cmds import tail_delta
from angora_testkit import CLI, System, python_cmd, running, wait_for

TICKS = "import time\nfor i in range(10):\n    print('tick', i, flush=True)\n    time.sleep(0.4)"
JOBS = f"""
- {{name: slow, triggers: [st.slow], command: [sleep, "30"], replay: 0}}
- {{name: broken, triggers: [st.broken], command: "false", replay: 0, messages: [st.after]}}
- {{name: after, triggers: [st.after], command: [echo, after ran]}}
- {{name: ticks, triggers: [st.ticks], command: {python_cmd(TICKS)}}}
"""


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    with running(angora_env, JOBS, tmp_path) as s:
        yield s


def angora(s: System, *args: str) -> subprocess.CompletedProcess:
    return s.cli(*args)


def execution_of(s: System, run_id: str, job: str, status: str) -> str:
    def find() -> str:
        return next((e["id"] for e in s.executions(run_id) if e["job"] == job and e["status"] == status), "")
    return wait_for(find, what=f"{job} {status} in {run_id}")


def test_kill_then_retry_from_the_cli(system: System) -> None:
    run_id = system.send("st.slow")
    xid = execution_of(system, run_id, "slow", "running")
    out = angora(system, "kill", xid, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"execution_id": xid, "result": "kill requested"}
    assert system.wait_run(run_id)["jobs"]["slow"]["status"] == "killed"
    again = angora(system, "kill", xid)
    assert again.returncode != 0 and "only running or waiting" in again.stderr and "Traceback" not in again.stderr
    retried = angora(system, "retry", xid)
    assert retried.returncode == 0, retried.stderr
    new = retried.stdout.strip()
    assert execution_of(system, run_id, "slow", "running") == new
    assert angora(system, "kill", new).stdout.strip() == f"{new}: kill requested"
    system.wait_run(run_id)
    missing = angora(system, "kill", "0" * 32)
    assert missing.returncode != 0 and "no execution" in missing.stderr


def test_skip_lets_the_children_run(system: System) -> None:
    run_id = system.send("st.broken")
    assert system.wait_run(run_id)["status"] == "failed"
    xid = execution_of(system, run_id, "broken", "failed")
    out = angora(system, "skip", xid, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"execution_id": xid, "status": "skipped"}
    run = system.wait_run(run_id)
    assert run["status"] == "succeeded" and run["jobs"]["after"]["status"] == "succeeded"
    after = execution_of(system, run_id, "after", "succeeded")
    logs = angora(system, "logs", after)
    assert logs.returncode == 0 and "after ran" in logs.stdout
    as_json = json.loads(angora(system, "logs", after, "--json").stdout)
    assert as_json["status"] == "succeeded" and "after ran" in as_json["tail"]


def test_cancel_json_answers_as_the_api(system: System) -> None:
    run_id = system.send("st.slow")
    xid = execution_of(system, run_id, "slow", "running")
    out = angora(system, "cancel", run_id, "--kill", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"run_id": run_id, "canceled": True, "dropped": [], "kill_requested": [xid]}
    run = system.wait_run(run_id)
    assert run["status"] == "canceled" and run["jobs"]["slow"]["status"] == "killed"


def test_logs_follow_prints_the_output_as_it_comes_and_exits_with_the_outcome(system: System) -> None:
    run_id = system.send("st.ticks")
    xid = execution_of(system, run_id, "ticks", "running")
    proc = subprocess.Popen([*CLI, "logs", xid, "--follow", "--interval", "0.2"], env=system.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # printed while the command still runs
    assert first.startswith("tick "), first
    assert system.q.execution(xid)["status"] == "running"
    rest, err = proc.stdout.read(), proc.stderr.read()  # not communicate(): it would skip what readline buffered
    assert proc.wait(60) == 0, err
    lines = [first.strip(), *rest.strip().splitlines()]
    assert lines == [f"tick {i}" for i in range(10)]  # each line once, in order
    assert f"[{xid}: succeeded on " in err  # and the host that ran it
    broken = system.send("st.broken")
    bad = execution_of(system, broken, "broken", "failed")
    assert angora(system, "logs", bad, "--follow").returncode == 1
    both = angora(system, "logs", bad, "--follow", "--json")
    assert both.returncode == 2 and "choose one" in both.stderr


def test_tail_delta_follows_a_tail_that_scrolls() -> None:
    assert tail_delta("", "abc") == "abc"
    assert tail_delta("abc", "abcdef") == "def"
    old = "".join(f"line {i}\n" for i in range(200))
    new = old[500:] + "line 200\n"  # the kept window moved on: its start dropped, one line came
    assert tail_delta(old, new) == "line 200\n"
    lost = tail_delta("x" * 2000, "y" * 10)
    assert lost.endswith("y" * 10) and "missed" in lost
    assert tail_delta("same", "same") == ""


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for command in ("kill", "retry", "skip", "cancel", "rerun", "logs"):
        assert f"angora {command}" in readme, command
    assert sys.executable  # the CLI under test is this interpreter's
