"""Root messages accepted and dispatched in one call (dispatch.submit_directs, send_dispatch.lua),
on the real redis-server: what SEND and a matcher's DISPATCH would have written together, with no stream entry;
a batch as each of its messages alone."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis

from angora_rq.core.errors import Conflict, Overloaded
from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.plans import run_plan_json
from angora_rq.core.pressure import NO_BUDGET, Budget
from angora_rq.core.schema import Defs, Exec, Metrics, Run
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.store.bus import Sent
from angora_rq.store.dispatch import Direct, Dispatcher, submit_directs
from angora_rq.store.events import Events, write_wanted
from angora_rq.store.link import Link, link_for, release_link
from angora_rq.store.sendgroup import SendGroup
from angora_testkit import hash_as

LOAD = JobDef("load", ("to.load",), ("true",), queue="etl")
INDEX = JobDef("index", ("to.load",), ("true",), queue="etl")


def send(r: redis.Redis, keys: Keys, *jobs: JobDef, key: str = "", budget: Budget = NO_BUDGET, n: str = "1") -> Sent:
    snap = Snapshot(Config(jobs=jobs, version="v1"))
    msg = Message.create("to.load", {"N": n}, origin="http")
    dispatcher = Dispatcher(Link(r), keys, Settings(history=10), "web", Events(r, keys))
    [sent] = submit_directs(r, keys, dispatcher, [Direct(msg, jobs, run_plan_json(snap, msg.topic), "v1", key)],
                            budget, key_ttl=60)
    if isinstance(sent, Exception):
        raise sent
    return sent


def queued(r: redis.Redis, keys: Keys, queue: str = "etl") -> list[str]:
    return [x.decode() for x in r.lrange(keys.rq_queue(queue), 0, -1)]


def test_one_call_accepts_creates_queues_and_counts_with_no_stream_entry(r: redis.Redis, keys: Keys) -> None:
    sent = send(r, keys, LOAD, INDEX)
    assert sent.message_id == "direct:" + sent.run_id
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


# -- a batch of messages in one call (submit_directs: the web's coalesced sends, store/sendgroup.py) ----------

def directs(r: redis.Redis, keys: Keys, sends: list[Direct], budget: Budget = NO_BUDGET) -> list[Any]:
    dispatcher = Dispatcher(Link(r), keys, Settings(history=10), "web", Events(r, keys))
    return submit_directs(r, keys, dispatcher, sends, budget, key_ttl=60)


def direct(*jobs: JobDef, key: str = "", n: str = "1") -> Direct:
    return Direct(Message.create("to.load", {"N": n}, origin="http"), jobs,
                  run_plan_json(Snapshot(Config(jobs=jobs, version="v1")), "to.load"), "v1", key)


def written(r: redis.Redis, keys: Keys, sent: Sent) -> dict[str, Any]:
    """What a dispatched message left: its run's hash, its executions' and RQ jobs' hashes (ids and times
    blanked), the queue and job lists holding them."""
    def blank(h: dict[bytes, bytes], ids: list[str]) -> dict[str, str]:
        out = {}
        for k, v in h.items():
            name, value = k.decode(), v.decode("latin-1")
            for i, x in enumerate([sent.run_id, *ids]):
                name, value = name.replace(x, f"<{i}>"), value.replace(x, f"<{i}>")
            out[name] = value
        return out
    run = r.hgetall(keys.run(sent.run_id))
    ids = [k.decode()[len(Run.execution):] for k, _ in sorted(  # by job name
        ((k, v) for k, v in run.items() if k.decode().startswith(Run.execution)), key=lambda kv: kv[1])]
    time_fields = {Run.created.encode(), Exec.created.encode(), b"created_at", b"enqueued_at"}
    def timeless(h: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return {k: b"" if k in time_fields else v for k, v in h.items()}
    return {"run": blank(timeless(run), ids),
            "execs": [blank(timeless(r.hgetall(keys.execution(x))), ids) for x in ids],
            "rq": [blank(timeless(r.hgetall(K.rq_job(x))), ids) for x in ids],
            "queued": [x in queued(r, keys) for x in ids],
            "listed": [x.encode() in r.lrange(keys.job_executions(run[(Run.execution + x).encode()].decode()), 0, -1)
                       for x in ids],
            "indexed": (r.zscore(keys.runs(), sent.run_id) is not None, r.hget(keys.runs_unsettled(), sent.run_id))}


def test_each_message_of_a_batch_gets_its_answer_and_what_a_lone_send_gets(r: redis.Redis, keys: Keys) -> None:
    lone = send(r, keys, LOAD, INDEX)
    assert [len(written(r, keys, lone)[k]) for k in ("execs", "rq", "listed")] == [2, 2, 2]
    batch = [direct(LOAD, INDEX, n="1") for _ in range(3)]
    answers = directs(r, keys, batch)
    assert [(a.run_id, a.message_id, a.replayed) for a in answers] == [
        (d.msg.run_id, "direct:" + d.msg.run_id, False) for d in batch]
    for a in answers:
        assert written(r, keys, a) == written(r, keys, lone)
    assert len(queued(r, keys)) == 8 and r.get(keys.work()) == b"8" and r.get(keys.accepted()) == b"4"
    assert r.hget(keys.metrics(), Metrics.messages + "root") == b"4" and not r.exists(keys.stream())


def test_a_budget_used_up_mid_batch_refuses_the_rest_and_creates_nothing_for_them(r: redis.Redis,
                                                                                  keys: Keys) -> None:
    r.set(keys.work(), 3)
    batch = [direct(LOAD) for _ in range(4)]
    answers = directs(r, keys, batch, Budget(5))
    assert [type(a) for a in answers] == [Sent, Sent, Overloaded, Overloaded]
    assert answers[2].detail["budget"] == "work" and answers[3].detail["used"] == 5
    assert r.get(keys.work()) == b"5" and r.get(keys.accepted()) == b"2" and len(queued(r, keys)) == 2
    for d in batch[2:]:
        assert not r.exists(keys.run(d.msg.run_id)) and r.zscore(keys.runs(), d.msg.run_id) is None
    assert {r.hget(keys.execution(x), Exec.run).decode() for x in queued(r, keys)} == {
        d.msg.run_id for d in batch[:2]}
    assert r.hget(keys.metrics(), Metrics.refused + "backlog") == b"2"


def test_a_key_repeated_in_a_batch_or_a_later_one_gets_the_first_answer(r: redis.Redis, keys: Keys) -> None:
    first, again, other, fresh = direct(LOAD, key="k1"), direct(LOAD, key="k1"), direct(LOAD, key="k1", n="2"), \
        direct(LOAD, key="k2")
    answers = directs(r, keys, [first, again, other, fresh])
    sent = answers[0]
    assert (sent.run_id, sent.message_id, sent.replayed) == (first.msg.run_id, "direct:" + first.msg.run_id, False)
    assert answers[1] == Sent(sent.run_id, sent.message_id, replayed=True)
    assert isinstance(answers[2], Conflict) and answers[2].detail == {"run_id": sent.run_id,
                                                                      "message_id": sent.message_id}
    assert answers[3] == Sent(fresh.msg.run_id, "direct:" + fresh.msg.run_id)
    assert r.zcard(keys.runs()) == 2 and len(queued(r, keys)) == 2 and r.get(keys.work()) == b"2"
    assert not r.exists(keys.run(again.msg.run_id)) and not r.exists(keys.run(other.msg.run_id))
    later = directs(r, keys, [direct(LOAD, key="k2"), direct(LOAD, key="k1")])
    assert later == [Sent(fresh.msg.run_id, "direct:" + fresh.msg.run_id, replayed=True),
                     Sent(sent.run_id, sent.message_id, replayed=True)]
    assert r.zcard(keys.runs()) == 2 and len(queued(r, keys)) == 2 and r.get(keys.accepted()) == b"2"


def test_a_paused_jobs_executions_are_held_in_a_batch(r: redis.Redis, keys: Keys) -> None:
    r.sadd(keys.paused_jobs(), "load")
    answers = directs(r, keys, [direct(LOAD, INDEX) for _ in range(2)])
    held = [x.decode() for x in r.lrange(keys.paused_held("load"), 0, -1)]
    assert len(held) == 2 and {r.hget(keys.execution(x), Exec.status) for x in held} == {b"held"}
    assert {r.hget(keys.execution(x), Exec.run).decode() for x in held} == {a.run_id for a in answers}
    assert len(queued(r, keys)) == 2  # index's


def test_a_batch_is_of_fresh_runs_of_one_version(r: redis.Redis, keys: Keys) -> None:
    other = direct(LOAD)
    with pytest.raises(ValueError):
        directs(r, keys, [direct(LOAD), Direct(other.msg, other.jobs, other.plan, "v2")])
    joined = Message.create("to.load", run_id="r1")
    with pytest.raises(ValueError):
        directs(r, keys, [Direct(joined, (LOAD,), other.plan, "v1")])
    assert not r.keys(keys.prefix + "*")


def test_a_send_group_makes_one_call_per_definitions_version_and_answers_in_order(r: redis.Redis,
                                                                                   keys: Keys) -> None:
    """A reload between two requests of one batch: each version's messages go in a call of their own."""
    dispatcher = Dispatcher(Link(r), keys, Settings(history=10), "web", Events(r, keys))
    group = SendGroup(r, keys, dispatcher, lambda: NO_BUDGET, 60, None)
    batch = [direct(LOAD), direct(LOAD), direct(LOAD, key="k"), direct(LOAD, key="k")]
    batch[1] = Direct(batch[1].msg, batch[1].jobs, batch[1].plan, "v2")
    def calls() -> int:
        return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    before = calls()
    answers = group._flush(batch)
    assert calls() - before == 2
    assert answers[:3] == [Sent(d.msg.run_id, "direct:" + d.msg.run_id) for d in batch[:3]]
    assert answers[3] == Sent(batch[2].msg.run_id, "direct:" + batch[2].msg.run_id, replayed=True)
    assert r.hget(keys.run(batch[1].msg.run_id), Run.config_version) == b"v2"
    assert r.hget(keys.run(batch[0].msg.run_id), Run.config_version) == b"v1"


def test_requests_waiting_for_a_batch_hold_no_connection_the_leader_needs(redis_url: str, keys: Keys) -> None:
    """The web's threads hold a connection of a bounded pool each (link_for) until their request ends; had the
    ones waiting for a batch kept theirs, the leader could not get one to send it: every request stalled until
    the pool's timeout, then failed (seen with 64 concurrent /send on a pool of 16)."""
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=10, timeout=2)
    r = redis.Redis(connection_pool=pool)
    started, go = threading.Event(), threading.Event()

    def budget() -> Budget:  # the leader's first flush waits here, so that the others queue behind it
        started.set()
        assert go.wait(30)
        return NO_BUDGET
    group = SendGroup(r, keys, Dispatcher(Link(r), keys, Settings(history=10), "web", Events(r, keys)), budget,
                      60, None)
    out: dict[int, Any] = {}

    def request(i: int) -> None:
        try:
            if i:
                link_for(r).call("PING")  # a read earlier in the request: the thread holds a connection
            out[i] = group.send(direct(LOAD))
        except Exception as e:  # noqa: BLE001 - what the request got
            out[i] = e
        finally:
            release_link(r)
    threads = [threading.Thread(target=request, args=(0,))]
    threads[0].start()
    assert started.wait(30)
    threads += [threading.Thread(target=request, args=(i,)) for i in range(1, 11)]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 30
    while len(group._batches._queue) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    go.set()
    for t in threads:
        t.join(30)
    assert all(isinstance(a, Sent) for a in out.values()) and len(out) == 11, out
    assert len(queued(r, keys)) == 11
    r.close()
    pool.disconnect()
