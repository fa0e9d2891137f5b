"""State's CREATE and FINISH scripts on real Redis: every record they write, and RQ reading the jobs back."""
from __future__ import annotations

import pickle

import redis
from rq.job import Job

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.rqcompat import _pickle, job_data
from angora_rq.core.settings import Settings
from angora_rq.core.execution import Claimed
from angora_rq.store.state import State
from angora_rq.store.queries import stats_view

JOB = JobDef("load", ("data.ready",), ("true",), queue="etl", messages=("data.loaded",), replay=0)


class Done:
    """An Outcome-like result."""

    def __init__(self, code: int) -> None:
        self.exit_code, self.signal, self.reason = code, None, "exit"
        self.started, self.ended, self.duration, self.tail = 1000.5, 1001.0, 0.5, "out\n"
        self.output = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def s(d: dict) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in d.items()}


def create(r: redis.Redis, keys: Keys, state: State, run_id: str = "run1") -> str:
    with r.pipeline() as pipe:
        xid = state.create(pipe, JOB, Message.create("data.ready", {"N": "1"}, run_id, origin="test"), 1000.0,
                           entry="1-0", config_version="v1")
        pipe.execute()
    return xid


def test_create_writes_execution_rq_job_queue_indices_and_run(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings(history=5))
    xid = create(r, keys, state)
    ex = s(r.hgetall(keys.execution(xid)))
    assert ex["job"] == "load" and ex["run"] == "run1" and ex["status"] == "queued" and ex["entry"] == "1-0"
    assert ex["params"] == '{"N": "1"}' and ex["config_version"] == "v1" and ex["replay_of"] == ""
    assert 0 < r.ttl(keys.execution(xid)) <= Settings().retention
    assert r.lrange(keys.rq_queue("etl"), 0, -1) == [xid.encode()]
    assert keys.rq_queue("etl").encode() in r.smembers(K.RQ_QUEUES)
    assert r.llen(keys.bell("etl")) == 1
    assert r.zscore(keys.job_executions("load"), xid) == 1000.0
    assert r.zscore(keys.run_executions("run1"), xid) == 1000.0
    run = s(r.hgetall(keys.run("run1")))
    assert run["active"] == "1" and run["n:load"] == "1" and run["s:load"] == "queued" and run["e:load"] == xid
    assert s(r.hgetall(keys.job_stats("load")))["last_execution"] == xid
    # RQ reads the job as one of its own: function, arguments, queue, status, and its always-empty fields.
    job = Job.fetch(xid, connection=r)
    assert job.func_name == "angora_rq.processes.worker.run_execution" and job.args == (xid, keys.prefix)
    assert job.origin == keys.rq_name("etl") and job.get_status() == "queued"
    assert s(r.hgetall(K.rq_job(xid)))["worker_name"] == ""


def test_counts_and_history_trim(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings(history=3))
    with r.pipeline() as pipe:
        for i in range(5):
            state.create(pipe, JOB, Message.create("data.ready", None, "run2"), 1000.0 + i)
        pipe.execute()
    assert r.hget(keys.run("run2"), "active") == b"5"  # each execution counts in its run
    assert r.hget(keys.run("run2"), "n:load") == b"5"
    assert r.zcard(keys.job_executions("load")) == 3


def test_finish_records_result_registries_stats_and_messages(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings())
    xid = create(r, keys, state)
    r.rpush(keys.worker_inflight("w1"), xid)
    r.zadd(keys.rq_started("etl"), {f"{xid}:{xid}": 1})
    ex = Claimed(id=xid, spec=JOB, run="run1", attempt=1, topic="data.ready", params={"N": "1"}, queue="etl",
                 created=1000.0)
    with r.pipeline() as pipe:
        assert state.finalize(pipe, ex, Done(0), 1002.0, worker="w1", pid=42) == "succeeded"
        pipe.execute()
    got = s(r.hgetall(keys.execution(xid)))
    assert (got["status"], got["exit_code"], got["started"], got["duration"], got["pid"], got["tail"]) == (
        "succeeded", "0", "1000.5", "0.500000", "42", "out\n")
    assert r.llen(keys.worker_inflight("w1")) == 0 and r.zcard(keys.rq_started("etl")) == 0
    assert r.zscore(keys.rq_finished("etl"), xid) == 1002.0 + int(Settings().retention)
    assert Job.fetch(xid, connection=r).get_status() == "finished"
    run = s(r.hgetall(keys.run("run1")))
    assert run["s:load"] == "succeeded"
    assert run["active"] == "1"  # 1 (execution) - 1 (finished) + 1 (the message it sent)
    stats = s(r.hgetall(keys.job_stats("load")))
    assert (stats["last_status"], stats["h:succeeded:0.5"], stats["d:succeeded"], stats["last_duration"]) == (
        "succeeded", "1", "0.5", "0.500000")
    view = stats_view(stats)
    assert (view["succeeded"], view["failed"], view["total"], view["success_rate"]) == (1, 0, 1, 1.0)
    [(_, fields)] = r.xrange(keys.stream())
    assert fields[b"t"] == b"data.loaded" and fields[b"r"] == b"run1"


def test_finish_failure_goes_to_rq_failed_and_counts(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings())
    xid = create(r, keys, state)
    ex = Claimed(id=xid, spec=JOB, run="run1", attempt=1, topic="data.ready", params={}, queue="etl", created=1000.0)
    with r.pipeline() as pipe:
        assert state.finalize(pipe, ex, Done(3), 1002.0) == "failed"
        pipe.execute()
    assert r.hget(keys.execution(xid), "exit_code") == b"3"
    assert r.zscore(keys.rq_failed("etl"), xid) is not None and r.zcard(keys.rq_finished("etl")) == 0
    stats = s(r.hgetall(keys.job_stats("load")))
    view = stats_view(stats)
    assert (view["succeeded"], view["failed"], view["total"], view["success_rate"]) == (0, 1, 1, 0.0)
    assert r.hget(keys.run("run1"), "active") == b"0" and r.xlen(keys.stream()) == 0


def test_job_data_template_is_the_plain_pickle() -> None:
    for xid in ("0123456789abcdef" * 2, "short-id"):
        assert job_data(xid, "pfx") == _pickle(xid, "pfx")
        assert pickle.loads(job_data(xid, "pfx")) == (
            "angora_rq.processes.worker.run_execution", None, (xid, "pfx"), {})

