"""A root message accepted and dispatched in one call (dispatch.submit_direct, send_dispatch.lua), on the real
redis-server: what SEND and a matcher's DISPATCH would have written together, with no stream entry."""
from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from angora_rq.core.errors import Conflict, Overloaded
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.plans import run_plan_json
from angora_rq.core.pressure import NO_BUDGET, Budget
from angora_rq.core.schema import Defs, Exec, Metrics, Run
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.store.bus import Sent
from angora_rq.store.dispatch import Dispatcher, direct_id, submit_direct
from angora_rq.store.events import Events, write_wanted
from angora_rq.store.link import Link
from angora_testkit import hash_as

LOAD = JobDef("load", ("to.load",), ("true",), queue="etl")
INDEX = JobDef("index", ("to.load",), ("true",), queue="etl")


def send(r: redis.Redis, keys: Keys, *jobs: JobDef, key: str = "", budget: Budget = NO_BUDGET, n: str = "1") -> Sent:
    snap = Snapshot(Config(jobs=jobs, version="v1"))
    msg = Message.create("to.load", {"N": n}, origin="http")
    dispatcher = Dispatcher(Link(r), keys, Settings(history=10), "web", Events(r, keys))
    return submit_direct(r, keys, msg, dispatcher, jobs,
                         run_plan_json(snap, msg.topic), "v1", budget, key=key, key_ttl=60)


def queued(r: redis.Redis, keys: Keys, queue: str = "etl") -> list[str]:
    return [x.decode() for x in r.lrange(keys.rq_queue(queue), 0, -1)]


def test_one_call_accepts_creates_queues_and_counts_with_no_stream_entry(r: redis.Redis, keys: Keys) -> None:
    sent = send(r, keys, LOAD, INDEX)
    assert sent.message_id == direct_id(Message("t", {}, sent.run_id)) == "direct:" + sent.run_id
    assert not sent.replayed and not r.exists(keys.stream())
    ids = queued(r, keys)
    assert len(ids) == 2 and r.llen(keys.bell("etl")) == 2
    ex: Any = hash_as(r, keys.execution(ids[0]), Exec)
    assert (ex["job"], ex["run"], ex["status"], ex["origin"], ex["config_version"], json.loads(ex["params"])) == (
        "load", sent.run_id, "queued", "http", "v1", {"N": "1"})
    run = {k.decode(): v.decode() for k, v in r.hgetall(keys.run(sent.run_id)).items()}
    assert (run[Run.active], run[Run.topic], run[Run.config_version], run[Run.job_status + "load"]) == (
        "2", "to.load", "v1", "queued")
    assert r.hget(keys.definitions("v1"), Defs.plan + run[Run.plan]) == run_plan_json(
        Snapshot(Config(jobs=(LOAD, INDEX), version="v1")), "to.load").encode()
    assert r.get(keys.work()) == b"2" and r.get(keys.accepted()) == b"1"
    assert r.zscore(keys.runs(), sent.run_id) is not None and r.hexists(keys.runs_unsettled(), sent.run_id)
    assert r.hget(keys.metrics(), Metrics.messages + "root") == b"1"


def test_a_repeat_answers_the_first_answer_and_dispatches_nothing(r: redis.Redis, keys: Keys) -> None:
    first = send(r, keys, LOAD, key="k1")
    again = send(r, keys, LOAD, key="k1")  # another generated run id
    assert (again.run_id, again.message_id, again.replayed) == (first.run_id, first.message_id, True)
    assert len(queued(r, keys)) == 1 and r.get(keys.work()) == b"1" and r.get(keys.accepted()) == b"1"
    assert r.zcard(keys.runs()) == 1 and not r.exists(keys.stream())
    with pytest.raises(Conflict) as e:  # the key, for another message: refused, nothing dispatched
        send(r, keys, LOAD, key="k1", n="2")
    assert e.value.detail == {"run_id": first.run_id, "message_id": first.message_id}
    assert len(queued(r, keys)) == 1 and r.zcard(keys.runs()) == 1


def test_a_budget_refusal_creates_nothing(r: redis.Redis, keys: Keys) -> None:
    r.set(keys.work(), 5)
    with pytest.raises(Overloaded):
        send(r, keys, LOAD, budget=Budget(5))
    assert queued(r, keys) == [] and r.get(keys.work()) == b"5" and not r.exists(keys.runs())
    assert not r.keys(keys.execution("*"))


def test_a_paused_job_is_held_and_an_approval_gate_waits(r: redis.Redis, keys: Keys) -> None:
    r.sadd(keys.paused_jobs(), "load")
    gate = JobDef("gate", ("to.load",), ("true",), queue="etl", approval=True)
    sent = send(r, keys, LOAD, gate)
    [held] = [x.decode() for x in r.lrange(keys.paused_held("load"), 0, -1)]
    assert r.hget(keys.execution(held), Exec.status) == b"held"
    [waiting] = [x.decode() for x in r.zrange(keys.approvals(), 0, -1)]
    assert r.hget(keys.execution(waiting), Exec.status) == b"awaiting_approval"
    assert queued(r, keys) == [] and r.hget(keys.run(sent.run_id), Run.active) == b"2"


def test_the_run_and_its_executions_publish_their_events(r: redis.Redis, keys: Keys) -> None:
    write_wanted(r, keys, {"angora.run.started": "w", "angora.execution.queued": "w"})
    sent = send(r, keys, LOAD)
    events = [json.loads(e) for e in reversed(r.lrange(keys.webhook_outbox(), 0, -1))]
    assert [(e["event"], e["run_id"]) for e in events] == [("angora.run.started", sent.run_id),
                                                          ("angora.execution.queued", sent.run_id)]


def test_a_dispatch_that_fails_sends_the_accepted_message_through_the_stream(r: redis.Redis, keys: Keys) -> None:
    """A key of the wrong type (corrupted data) makes DISPATCH fail before it queues anything: the message SEND
    accepted goes on the stream for a matcher (which dead-letters it if it keeps failing), not lost."""
    r.set(keys.job_executions("index"), "not a list")  # DISPATCH's history write for INDEX fails
    sent = send(r, keys, LOAD, INDEX, n="7")
    assert queued(r, keys) == [] and r.get(keys.work()) == b"1"  # nothing queued; the message counts as work
    [(_, entry)] = r.xrange(keys.stream())
    msg = Message.from_fields(entry)
    assert (msg.topic, msg.run_id, msg.origin, msg.params) == ("to.load", sent.run_id, "http", {"N": "7"})
    assert r.hget(keys.run(sent.run_id), Run.active) == b"1"  # the run waits for it


def test_a_write_that_fails_once_executions_are_queued_is_skipped_not_repeated(r: redis.Redis, keys: Keys) -> None:
    """After the first write a retry would repeat, DISPATCH goes on past a failure: a fan-out into two queues with
    the second queue corrupted queues the first once, and the message is not sent again."""
    other = JobDef("other", ("to.load",), ("true",), queue="spare")
    r.set(keys.rq_queue("spare"), "not a list")
    sent = send(r, keys, LOAD, other)
    assert len(queued(r, keys)) == 1 and not r.exists(keys.stream())  # dispatched, not put back on the stream
    assert r.get(keys.rq_queue("spare")) == b"not a list" and not sent.replayed
