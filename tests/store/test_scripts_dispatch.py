"""DISPATCH, READ_RUNS and SET_PLAN on the real redis-server, called through the Dispatcher (no matcher runs)."""
from __future__ import annotations

import json

import redis

from angora_rq.core import keys as K
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.store import bus
from angora_rq.store.dispatch import Dispatcher, Outgoing
from angora_rq.store.link import Link
from angora_rq.store.scripts import READ_RUNS, SET_PLAN

LOAD = JobDef("load", ("data.ready",), ("true",), queue="etl")
INDEX = JobDef("index", ("data.ready",), ("true",), queue="etl")
OTHER = JobDef("other", ("data.ready",), ("true",), queue="other")
NOW = 2000.0


def h(r: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in r.hgetall(key).items()}


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
             plans: tuple[str, ...] = ()) -> tuple[int, list[tuple[int, str]]]:
    """Every received message to every job, guarded per (entry, job) as the matcher does."""
    batch = Outgoing([(entry, msg, plans[i] if plans else "") for i, (entry, msg) in enumerate(received)],
                     [(i, job, keys.dedupe(entry, job.name)) for i, (entry, _) in enumerate(received) for job in jobs])
    return Dispatcher(Link(r), keys, Settings(history=10), "m1").dispatch(batch, "v1", NOW, 60)


def pending(r: redis.Redis, keys: Keys) -> int:
    return int(r.xpending(keys.stream(), MATCHER_GROUP)["pending"])


def test_dispatch_creates_queues_counts_and_acknowledges(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1", "run2")
    assert dispatch(r, keys, got, (LOAD, INDEX, OTHER)) == (6, [])
    queued = ids(r, keys.rq_queue("etl"))
    assert len(queued) == 4 and len(ids(r, keys.rq_queue("other"))) == 2
    assert r.llen(keys.bell("etl")) == 4 and r.llen(keys.bell("other")) == 2
    ex = h(r, keys.execution(queued[0]))
    assert (ex["job"], ex["run"], ex["status"], ex["entry"], ex["attempt"], ex["config_version"]) == (
        "load", "run1", "queued", got[0][0], "1", "v1")
    assert h(r, K.rq_job(queued[0]))["status"] == "queued"
    run = h(r, keys.run("run1"))
    assert run["active"] == "3"  # the message's count became its first execution's, and two more were added
    assert (run["s:load"], run["n:index"], run["e:load"]) == ("queued", "1", queued[0])
    assert r.zcard(keys.run_executions("run1")) == 3 and r.zcard(keys.job_executions("load")) == 2
    assert pending(r, keys) == 0


def test_dispatch_run_twice_creates_each_execution_once(r: redis.Redis, keys: Keys) -> None:
    """A stalled matcher's batch, claimed and dispatched by another, then dispatched again by the first."""
    got = receive(r, keys, "run1")
    assert dispatch(r, keys, got, (LOAD, INDEX)) == (2, [])
    assert dispatch(r, keys, got, (LOAD, INDEX)) == (0, [])
    assert len(ids(r, keys.rq_queue("etl"))) == 2 and r.zcard(keys.run_executions("run1")) == 2
    assert h(r, keys.run("run1"))["n:load"] == "1"


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
    assert h(r, keys.metrics()) == {"messages:root": "1", "messages:job": "2"}


def test_dispatch_run_twice_counts_the_message_in_its_run_once(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1")
    assert dispatch(r, keys, got, (LOAD,)) == (1, [])
    # A stalled matcher's call for the same entries, after another one dispatched and acknowledged them.
    assert dispatch(r, keys, got, (LOAD,)) == (0, [])
    assert h(r, keys.run("run1"))["active"] == "1"  # the queued execution: the run is not over


def test_a_message_that_starts_nothing_stops_counting_in_its_run(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1")
    assert dispatch(r, keys, got, ()) == (0, [])
    assert h(r, keys.run("run1"))["active"] == "0" and pending(r, keys) == 0


def test_dispatch_creates_nothing_in_a_canceled_run(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1", "run2")
    r.hset(keys.run("run1"), "canceled", "1")
    assert dispatch(r, keys, got) == (1, [])
    assert [h(r, keys.execution(x))["run"] for x in ids(r, keys.rq_queue("etl"))] == ["run2"]
    assert h(r, keys.run("run1"))["active"] == "0" and "s:load" not in h(r, keys.run("run1"))


def test_dispatch_holds_the_executions_of_a_paused_job(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1")
    r.sadd(keys.paused_jobs(), "load")
    assert dispatch(r, keys, got, (LOAD, OTHER)) == (2, [])
    [held] = ids(r, keys.paused_held("load"))
    assert r.llen(keys.rq_queue("etl")) == 0 and r.llen(keys.bell("etl")) == 0
    assert (h(r, keys.execution(held))["status"], h(r, K.rq_job(held))["status"]) == ("held", "deferred")
    assert h(r, keys.run("run1"))["s:load"] == "held" and len(ids(r, keys.rq_queue("other"))) == 1


def test_dispatch_writes_plans_and_hands_back_a_conflicting_one(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1", "run2", "run3")
    r.hset(keys.run("run2"), "plan", "old")
    r.hset(keys.run("run3"), "plan", "same")
    assert dispatch(r, keys, got, plans=("=new", "?mine", "?same")) == (3, [(1, "old")])
    assert [h(r, keys.run(f"run{i}"))["plan"] for i in (1, 2, 3)] == ["new", "old", "same"]
    assert h(r, keys.run("run1"))["config_version"] == "v1"
    assert json.loads(h(r, keys.run("run1"))["params"]) == {"N": "1"}


def test_a_join_guard_lets_one_dispatch_of_a_job_per_run_through(r: redis.Redis, keys: Keys) -> None:
    got = receive(r, keys, "run1", "run1")
    batch = Outgoing([(entry, msg, "") for entry, msg in got], [(i, LOAD, keys.join("run1", "load")) for i in (0, 1)])
    assert Dispatcher(Link(r), keys, Settings(), "m1").dispatch(batch, "v1", NOW, 60) == (1, [])
    assert h(r, keys.run("run1"))["active"] == "1"  # 2 messages: one became the execution, one counted out


# -- READ_RUNS and SET_PLAN --------------------------------------------------------------------------------------

def test_read_runs_reads_the_plan_or_the_whole_hash(r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.run("a"), mapping={"plan": "P", "s:load": "succeeded"})
    r.hset(keys.run("b"), mapping={"plan": "Q", "s:load": "failed"})
    reply = READ_RUNS.bind(runs=[keys.run("a"), "plan", keys.run("b"), "all", keys.run("none"), "all",
                                 keys.run("none"), "plan"]).run(Link(r))
    assert reply[:2] == [[b"plan", b"P"], [b"plan", b"Q", b"s:load", b"failed"]] and reply[2:] == [[], []]


def set_plan(r: redis.Redis, keys: Keys, read: str, merged: str) -> object:
    return SET_PLAN.bind(run=keys.run("a"), read=read, merged=merged, config_version="v2", params="{}").run(Link(r))


def test_set_plan_writes_only_over_the_plan_it_read(r: redis.Redis, keys: Keys) -> None:
    assert set_plan(r, keys, "", "P1") is None  # no plan yet
    assert set_plan(r, keys, "P1", "P2") is None
    assert set_plan(r, keys, "P1", "P3") == b"P2"  # changed since read: merge again
    assert h(r, keys.run("a")) == {"plan": "P2", "config_version": "v2", "params": "{}"}
