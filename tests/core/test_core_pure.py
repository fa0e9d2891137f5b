"""Small pure helpers of the core: reply decoding, run plans and joins, finishing an execution, schedule views,
a command's spec (plain data, no Redis, no process)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pytest

from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core.command import CleanEnv, command_spec
from angora_rq.core.execution import Claimed, final_status, replay_delay, spec_version
from angora_rq.core.schema import Exec
from angora_rq.core.model import Config, JobDef, ScheduleDef
from angora_rq.core.plans import manual_plan, merge_plans, missing_parents, plan_ref, run_plan_json
from angora_rq.core.schedules import leader_view, status_row
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot


@pytest.mark.parametrize("value, text", [(b"caf\xc3\xa9", "café"), (bytearray(b"x"), "x"), (None, ""), (3, "3"),
                                         ("s", "s"), (1.5, "1.5")])
def test_to_str_decodes_bytes_and_bytearray_and_none_is_empty(value: object, text: str) -> None:
    assert to_str(value) == text


def test_to_str_dict_decodes_a_hash() -> None:
    assert to_str_dict({b"a": b"1", "b": None, b"c": 2}) == {"a": "1", "b": "", "c": "2"}


# -- plans and joins ---------------------------------------------------------------------------------------
P1 = JobDef(name="p1", triggers=("go",), command=("true",), messages=("p.done",))
P2 = JobDef(name="p2", triggers=("go", "other"), command=("true",), messages=("p.done",))
J = JobDef(name="j", triggers=("p.done",), command=("true",), parent_success=True)
SNAP = Snapshot(Config(jobs=(P1, P2, J), version="v1"))


def test_a_run_without_a_plan_gets_the_topics_own() -> None:
    assert run_plan_json(SNAP, "go") == SNAP.plan_json("go")
    assert json.loads(run_plan_json(SNAP, "go", ""))["jobs"] == ["p1", "p2", "j"]


def test_a_second_root_message_merges_into_the_runs_plan() -> None:
    old = {"jobs": ["p2", "j"], "parents": {"p2": [], "j": ["p2"]}, "depth": {"p2": 0, "j": 1}}
    merged = json.loads(run_plan_json(SNAP, "go", json.dumps(old)))
    assert merged["jobs"] == ["p2", "j", "p1"]  # the run's jobs first, then the new ones
    assert merged["parents"]["j"] == ["p2"] and merged["parents"]["p1"] == []  # the run's parents win
    assert merge_plans(old, {"jobs": ["x"], "parents": {"x": []}}) == {
        "jobs": ["p2", "j", "x"], "parents": {"x": [], "p2": [], "j": ["p2"]}, "depth": {"p2": 0, "j": 1}}


def test_a_join_waits_for_the_parents_in_its_runs_plan() -> None:
    plan_both = run_plan_json(SNAP, "go")
    plan_p2 = run_plan_json(SNAP, "other")
    assert missing_parents(SNAP, "j", {"plan": plan_both, "s:p1": "succeeded"}) == ["p2"]
    assert missing_parents(SNAP, "j", {"plan": plan_both, "s:p1": "succeeded", "s:p2": "skipped"}) == []
    assert missing_parents(SNAP, "j", {"plan": plan_p2, "s:p2": "succeeded"}) == []  # p1 is not in this run
    assert missing_parents(SNAP, "j", {"s:p1": "failed"}) == ["p1", "p2"]  # no plan: every parent


def test_a_manual_plan_is_the_job_and_what_follows() -> None:
    assert manual_plan(SNAP, "p1") == {"jobs": ["p1", "j"], "parents": {"p1": [], "j": ["p1"]}, "depth": {}}


# -- finishing an execution ------------------------------------------------------------------------------------
@dataclass
class Ended:
    reason: str = "exit"
    exit_code: Optional[int] = 1
    signal: Optional[int] = None
    started: float = 0.0
    ended: float = 0.0
    duration: float = 0.0
    tail: str = ""
    output: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.reason == "exit"


def claimed(replay: Optional[int], attempt: int) -> Claimed:
    job = JobDef(name="x", triggers=("t",), command=("true",), replay=replay, replay_delay=0.5)
    return Claimed(id="e", spec=job, run="r", attempt=attempt, topic="t", params={}, queue="default", created=0.0)


def test_final_status() -> None:
    assert final_status(claimed(None, 9), Ended(exit_code=0)) == "succeeded"
    assert final_status(claimed(None, 1), Ended(reason="killed", exit_code=None)) == "killed"
    assert final_status(claimed(None, 50), Ended()) == "replaying"  # replay: null is unlimited
    assert final_status(claimed(2, 2), Ended(reason="timeout")) == "replaying"
    assert final_status(claimed(2, 3), Ended()) == "failed"
    assert final_status(claimed(0, 1), Ended(reason="worker lost", exit_code=None)) == "failed"
    assert [replay_delay(claimed(None, 1).spec, a, 3.0) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


def test_claimed_from_a_hash() -> None:
    job = JobDef(name="x", triggers=("t",), command=("true",))
    ex = Claimed.from_hash("e1", {Exec.job: "x", Exec.run: "r", Exec.attempt: "3", Exec.params: '{"A": "1"}',
                                  Exec.created: "12.5", Exec.config_version: "v"}, json.dumps(job.to_json()))
    assert (ex.id, ex.spec, ex.attempt, ex.params, ex.queue, ex.created, ex.version) == (
        "e1", job, 3, {"A": "1"}, "default", 12.5, "v")


def test_an_execution_whose_spec_is_gone_fails_to_start_and_says_why() -> None:
    ex = Claimed.from_hash("e1", {Exec.job: "x", Exec.run: "r"}, "")
    assert (ex.spec.name, ex.spec.command, ex.spec.replay) == ("x", (), 0) and "missing" in ex.spec.description


def test_a_spec_without_definitions_version_gets_one_of_its_own() -> None:
    assert spec_version("v1", "{}") == "v1"
    assert spec_version("", "{}") == spec_version("", "{}") != spec_version("", "[]")


# -- a command's spec ----------------------------------------------------------------------------------------------
def test_command_spec_reads_only_the_environment_it_is_given() -> None:
    job = JobDef(name="j", triggers=("t",), command=("echo", "$HOME", "${WHERE}"), log="$LOGS/x", cwd="$HOME",
                 env={"OUT": "$HOME/out"}, params={"day": "mon"})
    ex = Claimed(id="e", spec=job, run="r", attempt=2, topic="t", params={"day": "tue"}, queue="q", created=0.0)
    base = CleanEnv.of({"HOME": "/h", "LOGS": "/l", "ANGORA_PARAM_OLD": "x"})
    spec = command_spec(ex, Settings(), "/spool", base)
    assert list(spec.argv) == ["echo", "/h", "${WHERE}"] and spec.cwd == "/h" and spec.log_path == "/l/x/j.log"
    assert spec.env["OUT"] == "/h/out" and spec.env["ANGORA_PARAM_DAY"] == "tue" and "ANGORA_PARAM_OLD" not in spec.env
    assert spec.env["ANGORA_ATTEMPT"] == "2" and spec.spool_dir == "/spool" and "PATH" not in spec.env


# -- schedule views ----------------------------------------------------------------------------------------------
def test_leader_view() -> None:
    assert leader_view("", -2) == {"holder": None, "token": None, "ttl": None}
    assert leader_view("host.1.ab 7", 2500) == {"holder": "host.1.ab", "token": 7, "ttl": 2.5}


def test_status_row() -> None:
    s = ScheduleDef(name="s", message="tick", every=60.0)
    row = status_row(s, {"last": "60000", "sent_at": "61.5", "run": "r1", "sent": "3"}, "2", now=90.0)
    assert (row["name"], row["last_tick"], row["last_sent_at"], row["last_run"], row["last_run_active"],
            row["sent"], row["skipped"]) == ("s", 60.0, 61.5, "r1", True, 3, 0)
    assert row["next_fire"] is not None and row["next_fire"] > 90.0
    empty = status_row(s, {}, "", now=90.0)
    assert empty["last_tick"] is None and empty["last_run"] is None and empty["last_run_active"] is False


def test_a_layout_1_execution_and_run_in_layout_2() -> None:
    from angora_rq.core import layout

    spec = json.dumps(JobDef(name="x", triggers=("t",), command=("true",)).to_json())
    fields, got_spec, version, tail = layout.execution({
        "id": "e1", "job": "x", "run": "r", "status": "queued", "spec": spec, "params": "{}", "limit": "0",
        "config_version": "", "queued": "1.0", "entry": "1-0", "tail": "y" * 65, "created": "1.0"})
    assert fields == {Exec.job: "x", Exec.run: "r", Exec.status: "queued", Exec.config_version: version,
                      Exec.created: "1.0"}
    assert (got_spec, tail) == (spec, "y" * 65) and version == spec_version("", spec)
    run, plan, v = layout.run({"run_id": "r", "created": "1.0", "plan": '{"jobs": []}', "config_version": "v1",
                               "active": "0", "s:x": "queued", "e:x": "e1", "n:x": "1", "params": "{}"})
    assert (plan, v) == ('{"jobs": []}', "v1")
    assert run == {"c": "1.0", "pl": plan_ref(plan), "v": "v1", "a": "0", "s:x": "queued", "e:x": "e1"}
