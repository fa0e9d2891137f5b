"""The original's workflows end to end, through real matcher and worker processes on a real redis-server."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from angora_rq.store.control import Control
from angora_rq.core.settings import Settings
from angora_testkit import Make, pid_alive, systems, wait_for


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[Make]:
    """Factory: write definitions, start a matcher and N workers; everything is stopped afterwards."""
    with systems(angora_env, tmp_path) as make:
        yield make


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {name: info["status"] for name, info in run["jobs"].items()}


def test_step_1_then_step_2_with_logs(system: Make, tmp_path: Path) -> None:
    s = system("""
        - name: step_1
          triggers: [example.step.1]
          command: echo "HELLO"
          log: {tmp}/logs/
          messages: [example.step.2]
        - name: step_2
          triggers: [example.step.2]
          command: echo "WORLD"
          log: {tmp}/logs/
    """)
    run = s.wait_run(s.send("example.step.1"))
    assert run["status"] == "succeeded", s.logs()
    assert statuses(run) == {"step_1": "succeeded", "step_2": "succeeded"}
    log1 = (tmp_path / "logs" / "step_1.log").read_text()
    assert "HELLO" in log1 and "=== angora job=step_1" in log1 and "WORLD" not in log1
    assert "WORLD" in (tmp_path / "logs" / "step_2.log").read_text()
    ex = {e["job"]: e for e in s.executions(run["run_id"])}
    assert ex["step_1"]["exit_code"] == 0 and ex["step_2"]["origin"].startswith("job:step_1:")


def test_fan_out_to_three(system: Make) -> None:
    s = system("""
        - name: step_1
          triggers: [example.step.1]
          command: echo "HELLO WORLD"
          messages: [example.step.2, example.step.3, example.step.4]
        - {name: step_2, triggers: [example.step.2], command: "true"}
        - {name: step_3, triggers: [example.step.3], command: "true"}
        - {name: step_4, triggers: [example.step.4], command: "true"}
    """, workers=2)
    run = s.wait_run(s.send("example.step.1"))
    assert statuses(run) == dict.fromkeys(["step_1", "step_2", "step_3", "step_4"], "succeeded")
    assert run["plan"]["jobs"][0] == "step_1" and len(run["plan"]["jobs"]) == 4


THREE_PARENTS = """
    - name: start
      triggers: [go]
      command: "true"
      messages: [p.1, p.2, p.3]
    - {name: p1, triggers: [p.1], command: "true", messages: [done.1]}
    - {name: p2, triggers: [p.2], command: "sleep 0.2", messages: [done.2]}
    - {name: p3, triggers: [p.3], command: "sleep 0.4", messages: [done.3]}
    - name: child
      triggers: [done.1, done.2, done.3]
      command: "true"
      parent_success: PS
"""


def test_three_parents_without_parent_success_run_three_times(system: Make) -> None:
    s = system(THREE_PARENTS.replace("PS", "false"), workers=2)
    run = s.wait_run(s.send("go"))
    assert run["status"] == "succeeded", s.logs()
    assert run["jobs"]["child"]["executions"] == 3
    assert len([e for e in s.executions(run["run_id"]) if e["job"] == "child"]) == 3


def test_three_parents_with_parent_success_run_once_after_the_last(system: Make) -> None:
    s = system(THREE_PARENTS.replace("PS", "true"), workers=2)
    run = s.wait_run(s.send("go"))
    assert run["status"] == "succeeded", s.logs()
    ex = s.executions(run["run_id"])
    child = [e for e in ex if e["job"] == "child"]
    assert len(child) == 1
    last_parent_end = max(e["ended"] for e in ex if e["job"] in ("p1", "p2", "p3"))
    assert child[0]["started"] >= last_parent_end


def test_parent_success_child_is_upstream_failed_when_a_parent_fails(system: Make) -> None:
    s = system(THREE_PARENTS.replace("PS", "true").replace('command: "sleep 0.4"', 'command: "false", replay: 0'),
               workers=2)
    run = s.wait_run(s.send("go"))
    assert run["status"] == "failed"
    assert statuses(run)["child"] == "upstream_failed"
    assert statuses(run)["p3"] == "failed"


def test_replay_zero_and_two(system: Make) -> None:
    s = system("""
        - {name: never, triggers: [r.0], command: "false", replay: 0}
        - {name: twice, triggers: [r.2], command: "false", replay: 2, replay_delay: 0.2}
    """)
    run0 = s.wait_run(s.send("r.0"))
    assert [e["status"] for e in s.executions(run0["run_id"])] == ["failed"]
    run2 = s.wait_run(s.send("r.2"))
    ex = sorted(s.executions(run2["run_id"]), key=lambda e: e["attempt"])
    assert [e["attempt"] for e in ex] == [1, 2, 3]
    assert [e["status"] for e in ex] == ["failed", "failed", "failed"]  # a replayed attempt is failed once replayed
    assert run2["status"] == "failed"
    # Backoff: replay_delay 0.2 s, doubling (a lower bound on the gap, not a speed check).
    assert ex[1]["started"] - ex[0]["ended"] >= 0.2
    assert ex[2]["started"] - ex[1]["ended"] >= 0.4


def test_unlimited_replay_backs_off_until_stopped_by_hand(system: Make, angora_env: dict[str, str]) -> None:
    s = system("""
        - {name: flaky, triggers: [u], command: "false", replay_delay: 0.1}
    """)
    run_id = s.send("u")
    ex = wait_for(lambda: (lambda e: e if len(e) >= 5 else None)(s.executions(run_id)), 30, what="5 attempts")
    ex = sorted(ex, key=lambda e: e["attempt"])
    # Backoff doubles from replay_delay (0.1, 0.2, 0.4 s): lower bounds on the gaps, not speed checks.
    for i, (a, b) in enumerate(zip(ex[:3], ex[1:4])):
        assert b["started"] - a["ended"] >= 0.1 * 2 ** i
    finished = [e for e in ex if e["status"] in ("failed", "replaying")]  # failed once its replay has run
    assert len(finished) >= 3
    # Stop it by hand: cancel the run; the waiting attempt is dropped and no further attempt starts.
    control = Control(s.r, s.keys, Settings.from_env(angora_env))
    control.cancel_run(run_id)
    run = s.wait_run(run_id)
    # The run is over once a worker has taken the waiting attempt and dropped it (canceled). A dropped attempt has
    # no successor, and nothing is left delayed, queued or running that could start one.
    last = max(s.executions(run_id), key=lambda e: e["attempt"])
    assert last["status"] == "canceled"
    assert s.r.zcard(s.keys.delayed()) == 0
    assert s.r.llen(s.keys.rq_queue("default")) == 0 and s.r.zcard(s.keys.rq_started("default")) == 0
    assert run["status"] == "canceled"


def test_timeout_kills_the_grandchild(system: Make, tmp_path: Path) -> None:
    s = system("""
        - name: slow
          triggers: [t]
          command: ["sh", "-c", "sleep 1000 & echo $! > {tmp}/gc.pid; wait"]
          timeout: 1
          replay: 0
    """)
    run = s.wait_run(s.send("t"))
    (e,) = s.executions(run["run_id"])
    assert e["status"] == "failed" and e["reason"] == "timeout"
    gc = int((tmp_path / "gc.pid").read_text())
    wait_for(lambda: not pid_alive(gc), 10, what="grandchild to be gone")


def test_params_reach_the_command_as_env_vars(system: Make, tmp_path: Path) -> None:
    s = system("""
        - name: show
          triggers: [p]
          command: env
          log: {tmp}/logs
          params: {WHO: default, KEEP: kept}
    """)
    run = s.wait_run(s.send("p", {"WHO": "alice"}))
    log = (tmp_path / "logs" / "show.log").read_text()
    assert "ANGORA_PARAM_WHO=alice" in log and "ANGORA_PARAM_KEEP=kept" in log
    assert f"ANGORA_RUN_ID={run['run_id']}" in log and "ANGORA_JOB=show" in log and "ANGORA_ATTEMPT=1" in log
    assert "ANGORA_MESSAGE=p" in log


INJECTIONS = ["; touch {tmp}/pwned1", "$(touch {tmp}/pwned2)", "`touch {tmp}/pwned3`", "${SECRET}",
              "--output={tmp}/pwned4"]


def test_params_never_execute_expand_or_become_options(system: Make, tmp_path: Path) -> None:
    s = system("""
        - name: echo_it
          triggers: [i]
          command: echo $ANGORA_PARAM_X ${ANGORA_PARAM_X} $HOME
          log: {tmp}/logs
        - name: env_it
          triggers: [i]
          command: env
          log: {tmp}/logs
    """, extra_env={"SECRET": "s3cr3t"})
    for payload in INJECTIONS:
        value = payload.replace("{tmp}", str(tmp_path))
        s.wait_run(s.send("i", {"X": value}))
        env_log = (tmp_path / "logs" / "env_it.log").read_text()
        assert f"ANGORA_PARAM_X={value}\n" in env_log
    echo_log = (tmp_path / "logs" / "echo_it.log").read_text()
    # The template's $ANGORA_PARAM_X is not in the worker's environment, so it stays literal; $HOME expands.
    assert f"$ANGORA_PARAM_X ${{ANGORA_PARAM_X}} {os.environ['HOME']}" in echo_log
    assert "s3cr3t" not in echo_log
    assert not list(tmp_path.glob("pwned*"))


def test_worker_killed_mid_job_is_replayed_without_orphans(system: Make, tmp_path: Path) -> None:
    s = system("""
        - name: long
          triggers: [k]
          command: ["sh", "-c", "echo $$ >> {tmp}/pids; if [ \\"$ANGORA_ATTEMPT\\" = 1 ]; then sleep 1000; fi"]
    """, workers=1)
    run_id = s.send("k")
    wait_for(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text().strip(), 30, what="start")
    first_pid = int((tmp_path / "pids").read_text().split()[0])
    standby = s.start("worker")
    victim = next(p for n, p in s.procs.items() if n.startswith("worker") and p is not standby)
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    wait_for(lambda: not pid_alive(first_pid), 10, what="the killed worker's command to be gone")
    run = s.wait_run(run_id, timeout=60)
    ex = sorted(s.executions(run_id), key=lambda e: e["attempt"])
    assert [e["attempt"] for e in ex] == [1, 2]
    assert ex[0]["reason"] == "worker lost" and ex[0]["status"] == "failed"  # replayed, so no longer `replaying`
    assert ex[1]["status"] == "succeeded" and run["status"] == "succeeded"
    # Detected and replayed within 10 s of the kill (worker_ttl 5 s, a janitor pass a second, no backoff).
    assert ex[1]["started"] - killed_at < 10.0


def test_worker_sigterm_hands_back_and_another_runs_it(system: Make, tmp_path: Path) -> None:
    s = system("""
        - name: long
          triggers: [h]
          command: ["sh", "-c", "echo $ANGORA_ATTEMPT >> {tmp}/attempts; sleep 2"]
    """, workers=0)
    first = s.start("worker", "--grace", "0.5")
    run_id = s.send("h")
    wait_for(lambda: (tmp_path / "attempts").exists(), 30, what="start")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    s.start("worker")
    run = s.wait_run(run_id)
    assert run["status"] == "succeeded"
    (e,) = s.executions(run_id)
    assert e["attempt"] == 1  # handed back unspent, not counted as a failed attempt
    assert (tmp_path / "attempts").read_text().split() == ["1", "1"]
