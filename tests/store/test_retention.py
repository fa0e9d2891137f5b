"""Nothing grows without bound: history goes by whole finished runs (never an active one), indices are trimmed,
definitions versions nothing refers to go, RQ registries are cleaned."""
from __future__ import annotations

import dataclasses
import time

import redis

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.schema import Run
from angora_rq.core.settings import Settings
from angora_rq.processes.janitor import Janitor
from angora_rq.store.state import State

JOB = JobDef(name="j", triggers=("go",), command=("true",))


def make_runs(r: redis.Redis, keys: Keys, settings: Settings, started: list[float], version: str = "v1",
              name: str = "run") -> list[str]:
    """One run per start time (named name0, name1...) with one queued execution each; returns the execution ids."""
    state = State(keys, settings)
    ids = []
    with r.pipeline() as pipe:
        for i, t in enumerate(started):
            msg = Message.create("go", run_id=f"{name}{i}")
            pipe.hset(keys.run(msg.run_id), Run.created, repr(t))
            pipe.zadd(keys.runs(), {msg.run_id: t})
            ids.append(state.create(pipe, JOB, msg, t, config_version=version))
        pipe.execute()
    return ids


def finish(r: redis.Redis, keys: Keys, *run_ids: str) -> None:
    """Mark runs finished (nothing in flight) as FINISH leaves them."""
    for run_id in run_ids:
        r.hset(keys.run(run_id), Run.active, 0)


def test_history_goes_by_whole_finished_runs_oldest_first(r: redis.Redis, keys: Keys) -> None:
    settings = dataclasses.replace(Settings(prefix=keys.prefix), history=3, max_runs=2, retention=3600)
    now = time.time()
    ids = make_runs(r, keys, settings, [now - 7200, now - 5000, now + 1, now + 2, now + 3])
    assert [x.decode() for x in r.lrange(keys.job_executions("j"), 0, -1)] == ids[:1:-1]  # the job's last 3
    assert all(r.ttl(k) == -1 for x in ids for k in (keys.execution(x), K.rq_job(x)))  # nothing expires by itself
    finish(r, keys, "run0", "run2", "run3", "run4")  # run1 is still active (its execution is queued)
    r.zadd(keys.rq_finished("default"), {"old": now - 10, "fresh": now + 100})
    r.hset(keys.heartbeats(), mapping={"matcher:gone": now - 2 * 86400, "matcher:live": now})
    Janitor(r, keys, settings).trim(now)
    # run0 is past the retention; then max_runs=2 drops the oldest finished ones: the active run1 stays.
    assert [x.decode() for x in r.zrange(keys.runs(), 0, -1)] == ["run1", "run4"]
    for gone in (0, 2, 3):
        assert not r.exists(keys.run(f"run{gone}"), keys.execution(ids[gone]), K.rq_job(ids[gone]))
    assert r.exists(keys.run("run1"), keys.execution(ids[1]), K.rq_job(ids[1])) == 3
    assert [x.decode() for x in r.zrange(keys.rq_finished("default"), 0, -1)] == ["fresh"]
    assert list(r.hgetall(keys.heartbeats())) == [b"matcher:live"]


def test_a_definitions_version_goes_once_nothing_kept_refers_to_it(r: redis.Redis, keys: Keys) -> None:
    settings = dataclasses.replace(Settings(prefix=keys.prefix), retention=3600)
    now = time.time()
    make_runs(r, keys, settings, [now - 90_000], version="old", name="a")
    make_runs(r, keys, settings, [now - 100], version="new", name="b")
    finish(r, keys, "a0")  # b0 is still active
    Janitor(r, keys, settings).trim(now)
    assert [x.decode() for x in r.zrange(keys.runs(), 0, -1)] == ["b0"]
    assert not r.exists(keys.definitions("old")) and r.zscore(keys.definitions_index(), "old") is None
    assert r.exists(keys.definitions("new")) and r.zscore(keys.definitions_index(), "new") is not None


def test_a_jobs_statistics_go_with_the_last_version_that_ran_it(r: redis.Redis, keys: Keys) -> None:
    """Job statistics are bounded by history: a job no kept definitions version ran loses its stats, history
    list and run index; a job a kept version ran keeps them."""
    settings = dataclasses.replace(Settings(prefix=keys.prefix), retention=3600)
    now = time.time()
    gone = JobDef(name="gone", triggers=("go",), command=("true",))
    state = State(keys, settings)
    with r.pipeline() as pipe:
        msg = Message.create("go", run_id="a0")
        pipe.hset(keys.run("a0"), Run.created, repr(now - 90_000))
        pipe.zadd(keys.runs(), {"a0": now - 90_000})
        state.create(pipe, gone, msg, now - 90_000, config_version="old")
        pipe.execute()
    r.zadd(keys.runs_by_job("gone"), {"a0": now - 90_000})
    r.sadd(keys.runs_indexed_jobs(), "gone")
    make_runs(r, keys, settings, [now - 100], version="new", name="b")  # job j, still running
    finish(r, keys, "a0")
    Janitor(r, keys, settings).trim(now)
    assert not r.exists(keys.job_stats("gone"), keys.job_executions("gone"), keys.runs_by_job("gone"))
    assert not r.sismember(keys.runs_indexed_jobs(), "gone")
    assert r.exists(keys.job_stats("j"), keys.job_executions("j")) == 2
