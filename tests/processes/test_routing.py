"""`queue: NAME`: a routed job runs only on a worker serving its queue (`angora worker -q NAME`)."""
from __future__ import annotations

from pathlib import Path

from angora_testkit import System, wait_for, write_config


def test_a_routed_job_runs_only_on_a_worker_of_its_queue(angora_env: dict[str, str], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "config", """
        - {name: on_alpha, triggers: [ev.route], command: "true", queue: alpha}
        - {name: on_beta, triggers: [ev.route], command: "true", queue: beta}
        - {name: on_gamma, triggers: [ev.gamma], command: "true", queue: gamma}
    """)
    s = System(angora_env, cfg, tmp_path)
    try:
        s.start("matcher")
        s.start("worker", "-q", "alpha", "--name", "w-alpha", "-c", "2")
        s.start("worker", "-q", "beta", "--name", "w-beta", "-c", "2")
        runs = [s.send("ev.route", {"N": str(i)}) for i in range(10)]
        for run_id in runs:
            assert s.wait_run(run_id, 60)["status"] == "succeeded", s.logs()
        gamma = s.send("ev.gamma")
        wait_for(lambda: s.executions(gamma), 30, what="gamma's execution to be queued")
        # A later message on a served queue: once it has run, the (idle) workers have had gamma's execution in
        # front of them and must have left it waiting, since no worker serves gamma.
        assert s.wait_run(s.send("ev.route", {"N": "later"}), 60)["status"] == "succeeded", s.logs()
        (waiting,) = s.executions(gamma)
    finally:
        s.stop()
    executions = [e for run_id in runs for e in s.executions(run_id)]
    assert len(executions) == 20
    for e in executions:
        assert e["status"] == "succeeded"
        assert (e["job"], e["queue"], e["worker"]) in {("on_alpha", "alpha", "w-alpha"), ("on_beta", "beta", "w-beta")}
    assert waiting["status"] == "queued" and waiting["worker"] is None
