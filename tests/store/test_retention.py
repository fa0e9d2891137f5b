"""Nothing grows without bound: indices are trimmed, hashes expire, RQ registries are cleaned."""
from __future__ import annotations

import dataclasses
import time

import redis

from angora_rq.core import keys as K
from angora_rq.processes.janitor import Janitor
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.store.state import State

JOB = JobDef(name="j", triggers=("go",), command=("true",))


def test_indices_are_trimmed_and_hashes_expire(r: redis.Redis, keys: Keys) -> None:
    settings = dataclasses.replace(Settings(prefix=keys.prefix), history=3, max_runs=2, retention=3600)
    state = State(keys, settings)
    now = time.time()
    ids = []
    with r.pipeline() as pipe:
        for i in range(5):
            msg = Message.create("go", run_id=f"run{i}")
            pipe.zadd(keys.runs(), {msg.run_id: now + i})
            ids.append(state.create(pipe, JOB, msg, now + i))
        pipe.execute()
    kept = [x.decode() for x in r.zrange(keys.job_executions("j"), 0, -1)]
    assert kept == ids[-3:]
    for xid in ids:
        assert 0 < r.ttl(keys.execution(xid)) <= 3600
        assert 0 < r.ttl(K.rq_job(xid)) <= 3600
    assert 0 < r.ttl(keys.run("run0")) <= 3600
    r.zadd(keys.rq_finished("default"), {"old": now - 10, "fresh": now + 100})
    r.hset(keys.heartbeats(), mapping={"matcher:gone": now - 2 * 86400, "matcher:live": now})
    Janitor(r, keys, settings).trim(now)
    assert [x.decode() for x in r.zrange(keys.runs(), 0, -1)] == ["run3", "run4"]
    assert [x.decode() for x in r.zrange(keys.rq_finished("default"), 0, -1)] == ["fresh"]
    assert list(r.hgetall(keys.heartbeats())) == [b"matcher:live"]
