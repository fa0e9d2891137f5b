"""Events: run and execution state changes published on reserved `angora.` topics, for jobs to react to."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from angora_rq.core.events import TOPICS, listeners, wanted
from angora_rq.core.model import JobDef, WebhookDef
from angora_rq.core.topics import TriggerIndex
from angora_rq.definitions.load import validate
from angora_rq.store.events import Events
from angora_testkit import Make, System, events_heard, python_cmd, wait_for, write_config

SHOW_EVENT = python_cmd("import os, json; print(json.dumps({k[13:]: v for k, v in os.environ.items() "
                        "if k.startswith('ANGORA_PARAM_')}))")



def runs_of(s: System, topic: str) -> list[dict[str, Any]]:
    """Every run started by an event of `topic`, oldest first."""
    total, runs = s.q.runs(limit=500)
    return sorted((r for r in runs if r["origin"] == f"event:{topic}"), key=lambda r: r["created"])


def wait_events(s: System, topic: str, n: int) -> list[dict[str, Any]]:
    """The runs of `topic`'s events once there are `n`, each finished."""
    found = wait_for(lambda: len(runs_of(s, topic)) >= n and runs_of(s, topic), what=f"{n} {topic} run(s) "
                     f"({s.logs()})")
    return [s.wait_run(r["run_id"]) for r in found]


def printed(s: System, run: dict[str, Any], job: str) -> Any:
    return json.loads(s.q.execution(run["jobs"][job]["execution"])["tail"])


# -- pure ------------------------------------------------------------------------------------------------------

def test_who_listens_to_which_event() -> None:
    jobs = [JobDef("alert", ("angora.run.failed",), ("true",)), JobDef("all", ("#",), ("true",)),
            JobDef("execs", ("angora.execution.*",), ("true",))]
    hooks = [WebhookDef("h", "http://x/", ("angora.run.*",))]
    index = TriggerIndex(jobs)
    table = wanted(index, hooks)
    assert table["angora.run.failed"] == "jw" and table["angora.run.started"] == "w"
    assert table["angora.execution.killed"] == "j" and set(table) <= set(TOPICS)
    # a catch-all trigger hears messages, not events
    assert [j.name for j in listeners(index.lookup("angora.run.failed"), "angora.run.failed")] == ["alert"]
    assert [j.name for j in listeners(index.lookup("x.y"), "x.y")] == ["all"]


def test_event_topics_in_definitions(tmp_path: Path) -> None:
    write_config(tmp_path, """\
        - {name: a, triggers: [go], command: "true", messages: [angora.run.failed]}
        - schedule: s
          every: 1h
          message: angora.x
    """)
    _, problems = validate(tmp_path)
    assert [p.message for p in problems] == [
        "topic 'angora.run.failed' is reserved: topics starting with 'angora.' are Angora's events",
        "'message' must be an exact topic: topic 'angora.x' is reserved: topics starting with 'angora.' are "
        "Angora's events"]
    write_config(tmp_path, """\
        - {name: a, triggers: [angora.run.faild], command: "true"}
    """)
    config, problems = validate(tmp_path)
    assert config is not None
    assert "job 'a': trigger 'angora.run.faild' matches no event (did you mean 'angora.run.failed'?)" in [
        str(p).split(": warning: ")[-1] for p in problems]


# -- through the real processes ---------------------------------------------------------------------------------

def test_a_job_reacts_to_a_failed_run_in_a_run_of_its_own(system: Make) -> None:
    s = system(f"""
        - {{name: build, triggers: [go], command: "false", replay: 0}}
        - {{name: alert, triggers: [angora.run.failed], command: {SHOW_EVENT}}}
    """)
    events_heard(s)
    run_id = s.send("go")
    assert s.wait_run(run_id)["status"] == "failed"
    (alert_run,) = wait_events(s, "angora.run.failed", 1)
    assert alert_run["status"] == "succeeded" and alert_run["run_id"] != run_id
    assert alert_run["plan"]["jobs"] == ["alert"] and alert_run["topic"] == "angora.run.failed"
    assert printed(s, alert_run, "alert") == {
        "ANGORA_EVENT": "angora.run.failed", "ANGORA_EVENT_RUN_ID": run_id, "ANGORA_EVENT_STATUS": "failed",
        "ANGORA_EVENT_TOPIC": "go"}


def test_events_of_a_run_an_event_started_trigger_no_job(system: Make) -> None:
    s = system("""
        - {name: build, triggers: [go], command: "false", replay: 0}
        - {name: alert, triggers: [angora.execution.failed], command: "false", replay: 0}
    """)
    events_heard(s)
    run_id = s.send("go")
    s.wait_run(run_id)
    (alert_run,) = wait_events(s, "angora.execution.failed", 1)
    assert alert_run["status"] == "failed"  # alert failed too ...
    alert_ex = s.q.execution(alert_run["jobs"]["alert"]["execution"])
    assert alert_ex["params"]["ANGORA_EVENT_JOB"] == "build"
    # ... and its failure, published in the same transaction as its record, started nothing: no loop.
    assert len(runs_of(s, "angora.execution.failed")) == 1
    assert {r["run_id"] for r in s.q.runs(limit=50)[1]} == {run_id, alert_run["run_id"]}


def test_nothing_is_published_when_nobody_listens(system: Make) -> None:
    s = system("""
        - {name: build, triggers: [go], command: "false", replay: 0}
    """)
    run_id = s.send("go")
    s.wait_run(run_id)
    assert [r["run_id"] for r in s.q.runs(limit=50)[1]] == [run_id]
    assert s.r.xlen(s.keys.stream()) <= 1 and s.r.llen(s.keys.webhook_outbox()) == 0
    assert Events(s.r, s.keys).wanted() == {}


def test_execution_events_from_every_step(system: Make) -> None:
    s = system(f"""
        - {{name: build, triggers: [go], command: "true", messages: [built]}}
        - {{name: deploy, triggers: [built], command: "true", approval: true}}
        - name: ask
          triggers: [angora.execution.awaiting_approval, angora.execution.approved, angora.run.started]
          command: {SHOW_EVENT}
    """)
    events_heard(s)
    run_id = s.send("go")
    (started,) = wait_events(s, "angora.run.started", 1)
    assert printed(s, started, "ask")["ANGORA_EVENT_RUN_ID"] == run_id
    (asked,) = wait_events(s, "angora.execution.awaiting_approval", 1)
    seen = printed(s, asked, "ask")
    assert seen["ANGORA_EVENT_JOB"] == "deploy" and seen["ANGORA_EVENT_STATUS"] == "awaiting_approval"
    from angora_rq.core.settings import Settings
    from angora_rq.store.control import Control

    Control(s.r, s.keys, Settings.from_env(s.env)).decide(seen["ANGORA_EVENT_EXECUTION_ID"], True, "t")
    (approved,) = wait_events(s, "angora.execution.approved", 1)
    assert printed(s, approved, "ask")["ANGORA_EVENT_EXECUTION_ID"] == seen["ANGORA_EVENT_EXECUTION_ID"]
    assert s.wait_run(run_id)["status"] == "succeeded"
