"""Failure branches: `on_failure` topics sent when an execution fails for good, planned from the start."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path


from angora_rq.core.graph import Graph
from angora_rq.core.model import JobDef
from angora_rq.core.plans import manual_plan, merge_plans
from angora_rq.core.runs import summarize
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.definitions.load import load_config, validate
from angora_rq.store.control import Control
from angora_testkit import Make, python_cmd, wait_for, write_config



BRANCHED = [
    JobDef("build", ("go",), ("true",), messages=("built",), on_failure=("build.failed",)),
    JobDef("deploy", ("built",), ("true",)),
    JobDef("notify", ("build.failed",), ("true",), messages=("notified",)),
    JobDef("archive", ("notified",), ("true",)),
]


def test_the_plan_holds_failure_branches_apart_from_parents() -> None:
    g = Graph(BRANCHED)
    plan = g.plan("go")
    assert plan.jobs == ("build", "deploy", "notify", "archive")
    assert plan.parents["notify"] == () and plan.failure_parents == {"notify": ("build",)}
    assert plan.to_json()["failure_parents"] == {"notify": ["build"]}
    assert "failure_parents" not in g.plan("built").to_json()  # no failure branch, the plan's JSON as before
    assert g.failure_children("build") == ("notify",) and g.children("build") == ("deploy",)
    assert set(g.downstream("build")) == {"deploy", "notify", "archive"}
    edges = g.to_json()["edges"]
    assert {"from": "build", "to": "notify", "topic": "build.failed", "kind": "failure"} in edges
    assert {"from": "build", "to": "deploy", "topic": "built", "kind": "message"} in edges
    assert '"build" -> "notify" [label="build.failed", style=dashed, color=red];' in g.to_dot()
    assert 'j0 -.->|"build.failed"| j2' in g.to_mermaid()
    assert not [w for w in g.warnings() if w.job == "notify"]  # triggered, by a failure branch


def test_a_failure_branch_that_loops_is_a_cycle() -> None:
    g = Graph([JobDef("a", ("x",), ("true",), on_failure=("x",))])
    assert g.cycles() == [["a"]]


def test_manual_and_merged_plans_keep_failure_branches() -> None:
    from angora_rq.core.model import Config

    snap = Snapshot(Config(jobs=tuple(BRANCHED)))
    assert manual_plan(snap, "build")["failure_parents"] == {"notify": ["build"]}
    merged = merge_plans({"jobs": ["x"], "parents": {"x": []}}, snap.plan("go"))
    assert merged["failure_parents"] == {"notify": ["build"]}


def test_an_unrun_failure_branch_is_not_triggered_and_a_handled_failure_still_fails_the_run() -> None:
    plan = Graph(BRANCHED).plan("go").to_json()
    ok = summarize(plan["jobs"], plan["parents"], {"build": "succeeded", "deploy": "succeeded"}, active=0)
    assert ok.status == "succeeded" and ok.jobs["notify"] == "not_triggered" and ok.jobs["archive"] == "not_triggered"
    handled = summarize(plan["jobs"], plan["parents"],
                        {"build": "failed", "notify": "succeeded", "archive": "succeeded"}, active=0)
    assert handled.status == "failed" and handled.jobs["deploy"] == "upstream_failed"


def test_an_on_failure_topic_nobody_listens_to_is_an_error_at_its_place(tmp_path: Path) -> None:
    write_config(tmp_path, """\
        - name: a
          triggers: [go]
          command: "true"
          on_failure: [a.failed, a.oops]
        - {name: h, triggers: [a.failed], command: "true"}
    """)
    config, problems = validate(tmp_path)
    assert config is None
    assert [str(p) for p in problems] == [
        f"{tmp_path}/jobs.yml:4:26: job 'a': on_failure topic 'a.oops' has no job listening to it "
        "(add a job with it in its triggers, or remove it)"]
    (tmp_path / "jobs.yml").write_text(textwrap.dedent("""\
        - {name: a, triggers: [go], command: "true", on_failure: ["a.*"]}
    """))
    _, problems = validate(tmp_path)
    assert "has characters that are not allowed" in str(problems[0]) and ":1:59:" in str(problems[0])


def test_a_failure_branch_runs_once_after_the_replays_with_what_failed(system: Make, tmp_path: Path) -> None:
    s = system(f"""
        - name: build
          triggers: [go]
          command: {python_cmd("import sys; print('broken'); sys.exit(3)")}
          replay: 1
          replay_delay: 0
          params: {{TARGET: web}}
          messages: [built]
          on_failure: [build.failed]
        - {{name: deploy, triggers: [built], command: "true"}}
        - name: notify
          triggers: [build.failed]
          command: {python_cmd("import os, json; print(json.dumps({k: v for k, v in os.environ.items() "
                               "if k.startswith('ANGORA_PARAM_')}))")}
    """)
    run_id = s.send("go", {"WHO": "me"})
    run = s.wait_run(run_id)
    assert run["status"] == "failed", s.logs()  # handled, and still a failure
    assert run["plan"]["failure_parents"] == {"notify": ["build"]}
    assert {n: j["status"] for n, j in run["jobs"].items()} == {
        "build": "failed", "deploy": "upstream_failed", "notify": "succeeded"}
    ex = s.executions(run_id)
    builds = [e for e in ex if e["job"] == "build"]
    notify = [e for e in ex if e["job"] == "notify"]
    assert len(builds) == 2 and len(notify) == 1
    last = builds[-1]
    seen = json.loads(s.q.execution(notify[0]["id"])["tail"])
    # the message's params, not the job's defaults (TARGET), plus what failed
    assert seen == {"ANGORA_PARAM_WHO": "me", "ANGORA_PARAM_ANGORA_FAILED_JOB": "build",
                    "ANGORA_PARAM_ANGORA_FAILED_EXECUTION_ID": last["id"],
                    "ANGORA_PARAM_ANGORA_FAILED_EXIT_CODE": "3", "ANGORA_PARAM_ANGORA_FAILED_REASON": "exit"}
    assert notify[0]["origin"] == f"job:build:{last['id']}"


def test_a_job_that_succeeds_leaves_its_failure_branch_untriggered(system: Make) -> None:
    s = system("""
        - {name: build, triggers: [go], command: "true", on_failure: [build.failed]}
        - {name: notify, triggers: [build.failed], command: "true"}
    """)
    run = s.wait_run(s.send("go"))
    assert run["status"] == "succeeded", s.logs()
    assert run["jobs"]["notify"]["status"] == "not_triggered"


def test_a_killed_execution_takes_its_failure_branch(system: Make, angora_env: dict[str, str]) -> None:
    s = system(f"""
        - {{name: slow, triggers: [go], command: "sleep 60", on_failure: [slow.failed]}}
        - name: notify
          triggers: [slow.failed]
          command: {python_cmd("import os; print(os.environ['ANGORA_PARAM_ANGORA_FAILED_REASON'], "
                               "repr(os.environ['ANGORA_PARAM_ANGORA_FAILED_EXIT_CODE']))")}
    """)
    run_id = s.send("go")
    xid = wait_for(lambda: next((e["id"] for e in s.executions(run_id) if e["status"] == "running"), None),
                   what="slow to start")
    Control(s.r, s.keys, Settings.from_env(angora_env)).kill(xid)
    run = s.wait_run(run_id)
    assert run["jobs"]["slow"]["status"] == "killed" and run["jobs"]["notify"]["status"] == "succeeded", s.logs()
    notify = next(e for e in s.executions(run_id) if e["job"] == "notify")
    assert s.q.execution(notify["id"])["tail"].strip() == "killed ''"


def test_a_waiting_execution_killed_takes_its_failure_branch(system: Make, angora_env: dict[str, str]) -> None:
    s = system("""
        - {name: slow, triggers: [go], command: "true", on_failure: [slow.failed]}
        - {name: notify, triggers: [slow.failed], command: "true"}
    """, workers=0)
    run_id = s.send("go")
    xid = wait_for(lambda: next((e["id"] for e in s.executions(run_id) if e["status"] == "queued"), None),
                   what="slow to be queued")
    Control(s.r, s.keys, Settings.from_env(angora_env)).kill(xid)
    s.start("worker")
    run = s.wait_run(run_id)
    assert run["jobs"]["slow"]["status"] == "killed" and run["jobs"]["notify"]["status"] == "succeeded", s.logs()


def test_the_loaded_config_keeps_on_failure(tmp_path: Path) -> None:
    write_config(tmp_path, """\
        - {name: a, triggers: [go], command: "true", on_failure: [a.failed]}
        - {name: h, triggers: [a.failed], command: "true"}
    """)
    job = load_config(tmp_path).job("a")
    assert job is not None and job.on_failure == ("a.failed",)
    assert JobDef.from_json(job.to_json()).on_failure == ("a.failed",)
