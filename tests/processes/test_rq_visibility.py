"""RQ's own tools see Angora's workers and executions: rq-dashboard's JSON endpoints and `rq info`, against real
matcher and worker processes (worker state, finished and failed counts, the registries)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient

from angora_rq.core.settings import Settings
from angora_rq.store.control import Control
from angora_rq.web import create_app
from angora_testkit import System, wait_for, write_config

JOBS = """\
- {name: ok, triggers: [ok], command: "true"}
- {name: bad, triggers: [bad], command: "false", replay: 0}
- {name: slow, triggers: [slow], command: [sleep, "1.5"], concurrency: 1}
- {name: long, triggers: [long], command: [sleep, "60"], replay: 0}
"""


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    s = System(angora_env, write_config(tmp_path / "config", JOBS), tmp_path)
    s.start("matcher")
    s.start("worker")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def dashboard(system: System) -> FlaskClient:
    """rq-dashboard, mounted in Angora's app, on the system's Redis."""
    settings = Settings.from_env(system.env)
    return create_app({"SETTINGS": settings, "TESTING": True}).test_client()


def workers(dashboard: FlaskClient) -> list[dict[str, Any]]:
    resp = dashboard.get("/rq/0/data/workers.json")
    assert resp.status_code == 200
    return resp.get_json()["workers"]


def rq_info(system: System) -> str:
    out = subprocess.run([sys.executable, "-m", "rq.cli", "info", "--url", system.env["REDIS_URL"]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_workers_show_their_state_and_counts(system: System, dashboard: FlaskClient) -> None:
    for topic in ("ok", "ok", "bad"):
        system.wait_run(system.send(topic))
    idle = wait_for(lambda: [w for w in workers(dashboard) if w["state"] == "idle"], 15, what="an idle worker")
    assert len(idle) == 1
    # The counters move with the worker's heartbeat (store/rqworker.Tally), once a second.
    w = wait_for(lambda: next((w for w in workers(dashboard) if w["successful_job_count"] + w["failed_job_count"] >= 3),
                              None), 15, what="the counters to move")
    assert (w["successful_job_count"], w["failed_job_count"]) == (2, 1)
    queue = system.keys.rq_name("default")  # the name RQ knows Angora's queue by
    assert w["total_working_time"] > 0 and w["queues"] == [queue]
    assert f"{w['name']} (" in rq_info(system)
    assert f"idle {queue}. jobs: 2 finished, 1 failed" in rq_info(system)

    run_id = system.send("long")
    xid = wait_for(lambda: next((e["id"] for e in system.executions(run_id) if e["status"] == "running"), None), 15,
                   what="long to run")
    assert [x["state"] for x in workers(dashboard)] == ["busy"]
    assert f"busy {queue}. jobs: 2 finished, 1 failed" in rq_info(system)
    control = Control(system.r, system.keys, Settings.from_env(system.env))
    assert control.kill(xid) == "kill requested"
    system.wait_run(run_id)
    wait_for(lambda: workers(dashboard)[0]["failed_job_count"] == 2, 15, what="the kill to count as a failure")


def test_canceled_executions_are_in_rqs_canceled_registry(system: System, dashboard: FlaskClient) -> None:
    control = Control(system.r, system.keys, Settings.from_env(system.env))
    first = system.send("slow")
    wait_for(lambda: any(e["status"] == "running" for e in system.executions(first)), 15, what="slow to run")
    held = system.send("slow")  # concurrency 1: waits for the first
    third = system.send("slow")
    held_id = wait_for(lambda: next((e["id"] for e in system.executions(held) if e["status"] == "held"), None), 15,
                       what="the second to be held")
    control.cancel_run(held)  # dropped by the worker when its turn comes (CLAIM)
    third_id = wait_for(lambda: next((e["id"] for e in system.executions(third)), None), 15, what="the third")
    assert control.kill(third_id) in ("killed", "kill requested")
    for run_id in (first, held, third):
        system.wait_run(run_id)
    assert {system.q.execution(x)["status"] for x in (held_id,)} == {"canceled"}
    canceled = {m.decode() for m in system.r.zrange(system.keys.rq_canceled("default"), 0, -1)}
    assert {held_id, third_id} <= canceled
    queues = dashboard.get("/rq/0/data/queues.json").get_json()["queues"]
    queue = system.keys.rq_name("default")
    default = next(q for q in queues if q["name"] == queue)
    assert default["canceled_job_registry_count"] == 2
    # A succeeded execution leaves RQ at once (RQ's result_ttl=0; its worker's successful_job_count counts it).
    assert default["finished_job_registry_count"] == 0 and default["started_job_registry_count"] == 0
    listed = dashboard.get(f"/rq/0/data/jobs/{queue}/canceled/8/asc/1.json").get_json()
    assert {j["id"] for j in listed["jobs"]} == {held_id, third_id}
    info = dashboard.get(f"/rq/0/data/job/{held_id}.json").get_json()
    assert info["status"] == "canceled"
