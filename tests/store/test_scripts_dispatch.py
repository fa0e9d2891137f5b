"""DISPATCH, READ_RUNS and SET_PLAN on the real redis-server, called through the Dispatcher (no matcher runs)."""
from __future__ import annotations

import json
import logging

import pytest
import redis

from angora_rq.core import keys as K
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.plans import plan_ref
from angora_rq.core.schema import Defs, Exec, RqJob, Run
from angora_rq.core.settings import Settings
from angora_rq.store import bus
from angora_rq.store.dispatch import Dispatcher, Outgoing
from angora_rq.store.link import Link
from angora_rq.store.scripts import READ_RUNS, SET_PLAN
from angora_testkit import fields, hash_as

LOAD = JobDef("load", ("data.ready",), ("true",), queue="etl")
INDEX = JobDef("index", ("data.ready",), ("true",), queue="etl")
OTHER = JobDef("other", ("data.ready",), ("true",), queue="other")
NOW = 2000.0


def h(r: redis.Redis, key: str) -> dict[str, str]:
    """An execution's or a run's hash, fields under their Python names (core/schema.py)."""
    return hash_as(r, key, Run if ":run:" in key else Exec)


def run_execs(r: redis.Redis, keys: Keys, run_id: str) -> list[str]:
    return [f.decode()[len(Run.execution):] for f in r.hkeys(keys.run(run_id)) if f.decode().startswith(Run.execution)]


def ids(r: redis.Redis, key: str) -> list[str]:
    return [x.decode() for x in r.lrange(key, 0, -1)]


def receive(r: redis.Redis, keys: Keys, *run_ids: str) -> list[tuple[str, Message]]:
    """Send a root message per run id (each counts 1 in its run) and read them as a matcher does."""
    bus.ensure_group(r, keys)
    for run_id in run_ids:
        bus.send(r, keys, Message.create("data.ready", {"N": "1"}, run_id, origin="test"))
    [(_, got)] = r.xreadgroup(MATCHER_GROUP, "m1", {keys.stream(): ">"}, count=100)
    return [(entry.decode(), Message.from_fields(fields)) for entry, fields in got]


def dispatch(r: redis.Redis, keys: Keys, received: list[tuple[str, Message]], jobs: tuple[JobDef, ...] = (LOAD,),
             plans: tuple[str, ...] = (), consumer: str = "m1") -> tuple[int, list[tuple[int, str]]]:
    """Every received message to every job, as matcher `consumer` (the one that read them: `receive`)."""
    batch = Outgoing([(entry, msg, plans[i] if plans else "") for i, (entry, msg) in enumerate(received)],
                     [(i, job) for i in range(len(received)) for job in jobs])
    return Dispatcher(Link(r), keys, Settings(history=10), consumer).dispatch(batch, "v1", NOW)


def pending(r: redis.Redis, keys: Keys) -> int:
    return int(r.xpending(keys.stream(), MATCHER_GROUP)["pending"])


def test_dispatch_creates_queues_counts_and_acknowledges(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1", "run2")
    assert dispatch(r, keys, got, (LOAD, INDEX, OTHER)) == (6, [])
    queued = ids(r, keys.rq_queue("etl"))
    assert len(queued) == 4 and len(ids(r, keys.rq_queue("other"))) == 2
    assert r.llen(keys.bell("etl")) == 4 and r.llen(keys.bell("other")) == 2
    ex = h(r, keys.execution(queued[0]))
    assert (ex["job"], ex["run"], ex["status"], ex["attempt"], ex["config_version"]) == (
        "load", "run1", "queued", "1", "v1")
    assert r.hget(K.rq_job(queued[0]), RqJob.status) == b"queued"
    run = h(r, keys.run("run1"))
    assert run["active"] == "3"  # the message's count became its first execution's, and two more were added
    assert (run["s:load"], run["e:load"], run["x:" + queued[0]]) == ("queued", queued[0], "load")
    assert len(run_execs(r, keys, "run1")) == 3 and r.llen(keys.job_executions("load")) == 2
    assert json.loads(r.hget(keys.definitions("v1"), Defs.job + "load")) == LOAD.to_json()
    assert pending(r, keys) == 0


def test_dispatch_run_twice_creates_each_execution_once(r: redis.Redis, keys: Keys) -> None:
    """A batch dispatched twice (a lost reply, a retried step): the second finds its entries acknowledged."""
    got = receive(r, keys, "run1")
    assert dispatch(r, keys, got, (LOAD, INDEX)) == (2, [])
    assert dispatch(r, keys, got, (LOAD, INDEX)) == (0, [])
    assert len(ids(r, keys.rq_queue("etl"))) == 2 and len(run_execs(r, keys, "run1")) == 2


def test_dispatch_counts_the_messages_it_acknowledged_once(r: redis.Redis, keys: Keys) -> None:
    """For /metrics: root and job messages apart, and a batch dispatched twice (claimed) counted once."""
    bus.ensure_group(r, keys)
    bus.send(r, keys, Message.create("data.ready", None, "run1", origin="http"))
    bus.send(r, keys, Message("data.ready", {}, "run1", "job:load:x", 1.0))
    bus.send(r, keys, Message("data.ready", {}, "run1", "job:load:y", 1.0))
    [(_, got)] = r.xreadgroup(MATCHER_GROUP, "m1", {keys.stream(): ">"}, count=100)
    received = [(entry.decode(), Message.from_fields(fields)) for entry, fields in got]
    dispatch(r, keys, received)
    dispatch(r, keys, received)
    assert fields(r, keys.metrics()) == {"messages:root": "1", "messages:job": "2"}


def test_dispatch_run_twice_counts_the_message_in_its_run_once(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1")
    assert dispatch(r, keys, got, (LOAD,)) == (1, [])
    # A stalled matcher's call for the same entries, after another one dispatched and acknowledged them.
    assert dispatch(r, keys, got, (LOAD,)) == (0, [])
    assert h(r, keys.run("run1"))["active"] == "1"  # the queued execution: the run is not over


def test_only_the_matcher_an_entry_is_pending_for_dispatches_it(r: redis.Redis, keys: Keys) -> None:
    """A stalled matcher's entries claimed by another: the claimer dispatches them, the stalled one (waking up
    with the same batch) creates nothing and acknowledges nothing of theirs (a batch of three or more entries:
    one XPENDING read of the range is the check)."""
    got = receive(r, keys, "run1", "run2", "run3")
    r.xclaim(keys.stream(), MATCHER_GROUP, "m2", 0, [e for e, _ in got])
    assert dispatch(r, keys, got, (LOAD,), consumer="m1") == (0, [])
    assert pending(r, keys) == 3 and h(r, keys.run("run1"))["active"] == "1"
    assert dispatch(r, keys, got, (LOAD,), consumer="m2") == (3, [])
    assert pending(r, keys) == 0 and len(ids(r, keys.rq_queue("etl"))) == 3


def test_a_small_batch_is_dispatched_only_by_the_matcher_it_is_pending_for(r: redis.Redis, keys: Keys) -> None:
    """A batch of one entry, as a larger one: its pending record is the check (not an XACK first, whose answer
    would be the check too, but whose write a failure later in the script would keep), so of two matchers holding
    the same entry (one stalled, one that claimed it) only the claimer dispatches it, and only once."""
    got = receive(r, keys, "run1")
    r.xclaim(keys.stream(), MATCHER_GROUP, "m2", 0, [got[0][0]])
    assert dispatch(r, keys, got, (LOAD,), consumer="m1") == (0, [])  # woke first, but the entry is m2's now
    assert pending(r, keys) == 1
    assert dispatch(r, keys, got, (LOAD,), consumer="m2") == (1, [])
    assert pending(r, keys) == 0
    assert dispatch(r, keys, got, (LOAD,), consumer="m2") == (0, [])  # acknowledged: nothing made a second time
    assert len(ids(r, keys.rq_queue("etl"))) == 1 and h(r, keys.run("run1"))["active"] == "1"


def test_a_message_that_starts_nothing_stops_counting_in_its_run(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1")
    assert dispatch(r, keys, got, ()) == (0, [])
    assert h(r, keys.run("run1"))["active"] == "0" and pending(r, keys) == 0


def test_dispatch_creates_nothing_in_a_canceled_run(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1", "run2")
    r.hset(keys.run("run1"), Run.canceled, "1")
    assert dispatch(r, keys, got) == (1, [])
    assert [h(r, keys.execution(x))["run"] for x in ids(r, keys.rq_queue("etl"))] == ["run2"]
    assert h(r, keys.run("run1"))["active"] == "0" and "s:load" not in h(r, keys.run("run1"))


def test_dispatch_holds_the_executions_of_a_paused_job(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1")
    r.sadd(keys.paused_jobs(), "load")
    assert dispatch(r, keys, got, (LOAD, OTHER)) == (2, [])
    [held] = ids(r, keys.paused_held("load"))
    assert r.llen(keys.rq_queue("etl")) == 0 and r.llen(keys.bell("etl")) == 0
    assert (h(r, keys.execution(held))["status"], r.hget(K.rq_job(held), RqJob.status)) == ("held", b"deferred")
    assert h(r, keys.run("run1"))["s:load"] == "held" and len(ids(r, keys.rq_queue("other"))) == 1


def test_dispatch_writes_plans_and_hands_back_a_conflicting_one(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1", "run2", "run3")
    r.hset(keys.definitions("v0"), mapping={Defs.plan + plan_ref("old"): "old", Defs.plan + plan_ref("same"): "same"})
    r.hset(keys.run("run2"), mapping={Run.plan: plan_ref("old"), Run.config_version: "v0"})
    r.hset(keys.run("run3"), mapping={Run.plan: plan_ref("same"), Run.config_version: "v0"})
    assert dispatch(r, keys, got, plans=("=new", "?mine", "?same")) == (3, [(1, "old")])
    assert [h(r, keys.run(f"run{i}"))["plan"] for i in (1, 2, 3)] == [plan_ref(p) for p in ("new", "old", "same")]
    assert r.hget(keys.definitions("v1"), Defs.plan + plan_ref("new")) == b"new"  # its JSON, once per version
    assert h(r, keys.run("run1"))["config_version"] == "v1"
    assert json.loads(h(r, keys.run("run1"))["params"]) == {"N": "1"}


def test_a_join_fires_once_per_run(r: redis.Redis, keys: Keys) -> None:
    join = JobDef("load", ("data.ready",), ("true",), queue="etl", parent_success=True)
    got = receive(r, keys, "run1", "run1")
    batch = Outgoing([(entry, msg, "") for entry, msg in got], [(i, join) for i in (0, 1)])
    assert Dispatcher(Link(r), keys, Settings(), "m1").dispatch(batch, "v1", NOW) == (1, [])
    assert h(r, keys.run("run1"))["active"] == "1"  # 2 messages: one became the execution, one counted out


# -- READ_RUNS and SET_PLAN --------------------------------------------------------------------------------------

def test_read_runs_reads_the_plan_or_the_whole_hash(r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.definitions("v1"), mapping={Defs.plan + "p": "P", Defs.plan + "q": "Q"})
    r.hset(keys.run("a"), mapping={Run.plan: "p", Run.config_version: "v1", "s:load": "succeeded"})
    r.hset(keys.run("b"), mapping={Run.plan: "q", Run.config_version: "v1", "s:load": "failed"})
    reply = READ_RUNS.bind(defs_prefix=keys.definitions(""), runs=[
        keys.run("a"), "plan", keys.run("b"), "all", keys.run("none"), "all", keys.run("none"), "plan"]).run(Link(r))
    assert reply[0] == [b"P", []] and reply[1][0] == b"Q" and reply[2:] == [[b"", []], [b"", []]]
    assert dict(zip(reply[1][1][::2], reply[1][1][1::2]))[b"s:load"] == b"failed"


def set_plan(r: redis.Redis, keys: Keys, read: str, merged: str) -> object:
    return SET_PLAN.bind(run=keys.run("a"), defs=keys.definitions("v2"), defs_index=keys.definitions_index(),
                         read=plan_ref(read), merged_ref=plan_ref(merged), merged=merged, config_version="v2",
                         params="{}", defs_prefix=keys.definitions(""), now=NOW).run(Link(r))


def test_set_plan_writes_only_over_the_plan_it_read(r: redis.Redis, keys: Keys) -> None:
    assert set_plan(r, keys, "", "P1") is None  # no plan yet
    assert set_plan(r, keys, "P1", "P2") is None
    assert set_plan(r, keys, "P1", "P3") == b"P2"  # changed since read: merge again
    assert h(r, keys.run("a")) == {"plan": plan_ref("P2"), "config_version": "v2", "params": "{}"}
    assert r.zscore(keys.definitions_index(), "v2") == NOW


def test_a_write_that_fails_after_the_first_queued_execution_is_skipped_and_logged(
        r: redis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    """Once DISPATCH has written what a retry would repeat, a failure (a key of the wrong type: corrupted data) must
    not stop it: the batch is acknowledged, not dispatched again, and the matcher logs what was not written."""
    r.set(keys.rq_queue("other"), "not a list")
    with caplog.at_level(logging.ERROR, logger="angora_rq"):
        assert dispatch(r, keys, receive(r, keys, "run1"), jobs=(LOAD, OTHER)) == (2, [])
    assert len(ids(r, keys.rq_queue("etl"))) == 1 and pending(r, keys) == 0
    assert any("without some of its records" in m and "WRONGTYPE" in m for m in caplog.messages)
