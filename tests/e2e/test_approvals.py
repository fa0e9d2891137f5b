"""Approval gates: executions of an `approval: true` job wait for a person (or their approval_timeout)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from angora_rq.core.graph import Graph
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.definitions.load import validate
from angora_rq.store.control import Control
from angora_rq.web import create_app
from angora_testkit import CLI, Make, System, python_cmd, wait_for, write_config

GATED = """
    - {name: build, triggers: [go], command: "true", messages: [built]}
    - name: deploy
      triggers: [built]
      command: "true"
      approval: true
      messages: [deployed]
      on_failure: [deploy.failed]
    - {name: announce, triggers: [deployed], command: "true"}
    - name: notify
      triggers: [deploy.failed]
      command: %s
"""
NOTIFY = python_cmd("import os; print(os.environ['ANGORA_PARAM_ANGORA_FAILED_REASON'])")



def client_for(s: System) -> FlaskClient:
    """The web app on the system's Redis and definitions, through Flask's test client."""
    settings = Settings.from_env(s.env)
    return create_app({"SETTINGS": settings, "TESTING": True}).test_client()


def awaiting(s: System, run_id: str, job: str = "deploy") -> str:
    """The id of the run's execution of `job` once it awaits approval."""
    def found() -> Any:
        return next((e["id"] for e in s.executions(run_id) if e["job"] == job and e["status"] == "awaiting_approval"),
                    None)
    return wait_for(found, what=f"{job} to await approval ({s.logs()})")


# -- definitions and plans (pure) -------------------------------------------------------------------------------

def test_the_plan_shows_the_gate_from_the_start() -> None:
    jobs = [JobDef("a", ("go",), ("true",), messages=("x",)), JobDef("g", ("x",), ("true",), approval=True)]
    g = Graph(jobs)
    assert g.plan("go").gates == ("g",) and g.plan("go").to_json()["gates"] == ["g"]
    assert "gates" not in Graph(jobs[:1]).plan("go").to_json()
    assert [n["approval"] for n in g.to_json()["nodes"]] == [False, True]
    assert 'j1{{"g"}}' in g.to_mermaid() and "shape=octagon" in g.to_dot()


def test_gate_settings_need_a_gate(tmp_path: Path) -> None:
    write_config(tmp_path, """\
        - name: a
          triggers: [go]
          command: "true"
          approval_timeout: 5m
        - {name: b, triggers: [go], command: "true", approval: true, on_approval_timeout: maybe}
    """)
    _, problems = validate(tmp_path)
    assert [str(p).split("jobs.yml:")[1] for p in problems] == [
        "4:3: job 'a': 'approval_timeout' needs 'approval: true' (it says what happens to an execution nobody "
        "approved in time)",
        "5:83: job 'b': 'on_approval_timeout' must be one of reject, approve, not 'maybe'"]


# -- through the real processes ---------------------------------------------------------------------------------

def test_an_approved_execution_runs_and_who_approved_is_recorded(system: Make) -> None:
    s = system(GATED % NOTIFY)
    run_id = s.send("go")
    xid = awaiting(s, run_id)
    run = s.q.run(run_id)
    assert run["plan"]["gates"] == ["deploy"] and run["status"] == "running"
    assert run["jobs"]["deploy"]["status"] == "awaiting_approval" and run["jobs"]["announce"]["status"] == "pending"
    assert s.r.zscore(s.keys.approvals(), xid) == float("inf")

    client = client_for(s)
    html = client.get(f"/runs/{run_id}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert f'data-post="/api/v1/executions/{xid}/approve"' in html
    assert f'data-post="/api/v1/executions/{xid}/reject"' in html
    page = client.get(f"/executions/{xid}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert f'data-post="/api/v1/executions/{xid}/approve"' in page and ">Approve</button>" in page
    for text in (html, page):  # buttons without inline script: only data blocks and files
        assert not re.search(r"<script(?![^>]*(\bsrc=|application/json))", text)
        assert not re.search(r"\son[a-z]+=", text)

    client = client.application.test_client()  # a script's client: no cookie, so no CSRF token needed
    resp = client.post(f"/api/v1/executions/{xid}/approve", json={"by": "alice"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "queued" and body["approval"] == "approved" and body["decided_by"] == "alice"
    run = s.wait_run(run_id)
    assert run["status"] == "succeeded", s.logs()
    assert {n: j["status"] for n, j in run["jobs"].items()} == {
        "build": "succeeded", "deploy": "succeeded", "announce": "succeeded", "notify": "not_triggered"}
    view = client.get(f"/api/v1/executions/{xid}").get_json()
    assert (view["approval"], view["decided_by"]) == ("approved", "alice") and view["decided_at"] > 0
    assert s.r.zcard(s.keys.approvals()) == 0

    again = client.post(f"/api/v1/executions/{xid}/approve")
    assert again.status_code == 409
    assert again.get_json() == {"error": f"execution {xid} is succeeded, not awaiting approval: there is nothing "
                                         "to approve", "detail": {"status": "succeeded"}}
    assert client.post("/api/v1/executions/nope/reject").status_code == 404
    bad = client.post(f"/api/v1/executions/{xid}/approve", json={"who": "x"})
    assert bad.status_code == 400 and "unknown field" in bad.get_json()["error"]


def test_a_rejected_execution_fails_its_run_and_takes_its_failure_branch(system: Make) -> None:
    s = system(GATED % NOTIFY)
    run_id = s.send("go")
    xid = awaiting(s, run_id)
    out = subprocess.run([*CLI, "reject", xid, "--by", "bob"], env=s.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"execution {xid} rejected by bob: now rejected"
    run = s.wait_run(run_id)
    assert run["status"] == "failed", s.logs()
    assert {n: j["status"] for n, j in run["jobs"].items()} == {
        "build": "succeeded", "deploy": "rejected", "announce": "upstream_failed", "notify": "succeeded"}
    assert s.q.execution(run["jobs"]["notify"]["execution"])["tail"].strip() == "rejected"
    view = s.q.execution(xid)
    assert (view["approval"], view["decided_by"], view["status"]) == ("rejected", "bob", "rejected")
    again = subprocess.run([*CLI, "approve", xid], env=s.env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "not awaiting approval" in again.stderr and "Traceback" not in again.stderr


def test_the_approval_timeout_decides_as_told(system: Make) -> None:
    s = system("""
        - name: deploy
          triggers: [go]
          command: "true"
          approval: true
          approval_timeout: 1s
          on_approval_timeout: approve
    """)
    run_id = s.send("go")
    xid = awaiting(s, run_id)
    assert s.q.execution(xid)["approval_deadline"] is not None
    run = s.wait_run(run_id)  # a worker's janitor approves it once the timeout has passed
    assert run["status"] == "succeeded", s.logs()
    view = s.q.execution(xid)
    assert (view["approval"], view["decided_by"]) == ("approved", "timeout")
    assert view["decided_at"] >= view["approval_deadline"]


def test_cancel_kill_and_manual_runs_of_a_gate(system: Make, angora_env: dict[str, str]) -> None:
    s = system(GATED % NOTIFY)
    control = Control(s.r, s.keys, Settings.from_env(angora_env))
    run_id = s.send("go")
    xid = awaiting(s, run_id)
    assert control.cancel_run(run_id)["dropped"] == [xid]
    run = s.wait_run(run_id)
    assert run["status"] == "canceled" and run["jobs"]["deploy"]["status"] == "canceled"
    assert s.r.zcard(s.keys.approvals()) == 0

    by_hand = control.run_job(_snapshot(s), "deploy")  # by hand too: the gate holds
    assert s.q.execution(by_hand["execution_id"])["status"] == "awaiting_approval"
    assert control.kill(by_hand["execution_id"]) == "killed"
    run = s.wait_run(by_hand["run_id"])
    assert run["jobs"]["deploy"]["status"] == "killed" and run["jobs"]["notify"]["status"] == "succeeded", s.logs()
    assert s.r.zcard(s.keys.approvals()) == 0


def _snapshot(s: System) -> Any:
    from angora_rq.definitions.source import ConfigSource

    return ConfigSource(s.config).current()


def test_with_auth_on_the_logged_in_caller_is_who_decides(system: Make) -> None:
    s = system(GATED % NOTIFY, workers=0)
    run_id = s.send("built")
    xid = awaiting(s, run_id)
    settings = Settings.from_env(dict(s.env, ANGORA_AUTH_TOKEN="s3cret"))
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    assert client.post(f"/api/v1/executions/{xid}/approve").status_code == 401
    resp = client.post(f"/api/v1/executions/{xid}/approve", json={"by": "mallory"},
                       headers={"Authorization": "Bearer s3cret"})
    assert resp.status_code == 200 and resp.get_json()["decided_by"] == "token"  # not what the body claims
