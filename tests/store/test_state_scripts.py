"""State's CREATE and FINISH scripts on real Redis: every record they write, and RQ reading the jobs back."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import redis
from rq.job import Job

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.rqcompat import DESCRIPTION_MAX, job_data
from angora_rq.core.schema import Defs, Exec, Run
from angora_rq.core.settings import Settings
from angora_rq.core.execution import Claimed
from angora_rq.core.codec import to_str_dict
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_rq.store.queries import Queries, stats_view
from angora_rq.store.state import TAIL_INLINE, Finished, State, finish_reply
from angora_testkit import compact, fields

JOB = JobDef("load", ("data.ready",), ("true",), queue="etl", messages=("data.loaded",), replay=0)


class Done:
    """An Outcome-like result."""

    def __init__(self, code: int, tail: str = "out\n") -> None:
        self.exit_code, self.signal, self.reason = code, None, "exit"
        self.started, self.ended, self.duration, self.tail = 1000.5, 1001.0, 0.5, tail
        self.output = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def create(r: redis.Redis, keys: Keys, state: State, run_id: str = "run1") -> str:
    with r.pipeline() as pipe:
        xid = state.create(pipe, JOB, Message.create("data.ready", {"N": "1"}, run_id, origin="test"), 1000.0,
                           config_version="v1")
        pipe.execute()
    return xid


def claimed(xid: str, params: dict[str, str]) -> Claimed:
    return Claimed(id=xid, spec=JOB, run="run1", attempt=1, topic="data.ready", params=params, queue="etl",
                   created=1000.0, version="v1")


def test_create_writes_execution_rq_job_queue_indices_and_run(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings(history=5))
    xid = create(r, keys, state)
    ex = fields(r, keys.execution(xid))
    assert ex["job"] == "load" and ex["run"] == "run1" and ex["status"] == "queued"
    assert ex["params"] == '{"N": "1"}' and ex["config_version"] == "v1" and "replay_of" not in ex
    assert r.ttl(keys.execution(xid)) == -1  # unfinished work never expires
    assert json.loads(r.hget(keys.definitions("v1"), Defs.job + "load")) == JOB.to_json()
    assert r.lrange(keys.rq_queue("etl"), 0, -1) == [xid.encode()]
    assert keys.rq_queue("etl").encode() in r.smembers(K.RQ_QUEUES)
    assert r.llen(keys.bell("etl")) == 1
    assert r.lrange(keys.job_executions("load"), 0, -1) == [xid.encode()]
    run = fields(r, keys.run("run1"))
    assert run["active"] == "1" and run["n:load"] == "1" and run["s:load"] == "queued" and run["e:load"] == xid
    assert fields(r, keys.job_stats("load"))["last_execution"] == xid
    # RQ reads the job as one of its own: function, queue, status; every field it would leave empty is left out.
    job = Job.fetch(xid, connection=r)
    assert job.func_name == "angora_rq.processes.worker.run_execution" and job.args == ()
    assert job.origin == keys.rq_name("etl") and job.get_status() == "queued" and job.worker_name is None
    assert job.description == "load (run run1, attempt 1)"
    assert compact(r, K.rq_job(xid)) and compact(r, keys.execution(xid))


def test_counts_and_history_trim(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings(history=3))
    with r.pipeline() as pipe:
        xids = [state.create(pipe, JOB, Message.create("data.ready", None, "run2"), 1000.0 + i) for i in range(5)]
        pipe.execute()
    assert r.hget(keys.run("run2"), Run.active) == b"5"  # each execution counts in its run
    assert fields(r, keys.run("run2"))["n:load"] == "5"
    assert [x.decode() for x in r.lrange(keys.job_executions("load"), 0, -1)] == xids[::-1][:3]  # newest first


def test_finish_records_result_stats_and_messages_and_drops_the_rq_job(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings())
    xid = create(r, keys, state)
    r.rpush(keys.worker_inflight("w1"), xid)
    r.zadd(keys.rq_started("etl"), {f"{xid}:{xid}": 1})
    with r.pipeline() as pipe:
        assert state.finalize(pipe, claimed(xid, {"N": "1"}), Done(0), 1002.0, worker="w1") == "succeeded"
        pipe.execute()
    got = fields(r, keys.execution(xid))
    assert (got["status"], got["exit_code"], got["started"], got["ended"], got["tail"]) == (
        "succeeded", "0", "1000.5", "1001.0", "out\n")
    assert "duration" not in got and Queries(r, keys).execution(xid)["duration"] == 0.5  # ended - started
    assert "signal" not in got  # empty fields are left out
    assert r.llen(keys.worker_inflight("w1")) == 0 and r.zcard(keys.rq_started("etl")) == 0
    # RQ's result_ttl=0: a succeeded execution's RQ job goes (rq-dashboard shows the queued, running and failed).
    assert not r.exists(K.rq_job(xid)) and r.zcard(keys.rq_finished("etl")) == 0
    run = fields(r, keys.run("run1"))
    assert run["s:load"] == "succeeded"
    assert run["active"] == "1"  # 1 (execution) - 1 (finished) + 1 (the message it sent)
    stats = fields(r, keys.job_stats("load"))
    assert (stats["last_status"], stats["h:succeeded:0.5"], stats["d:succeeded"], stats["last_duration"]) == (
        "succeeded", "1", "0.5", "0.500000")
    view = stats_view(to_str_dict(r.hgetall(keys.job_stats("load"))))
    assert (view["succeeded"], view["failed"], view["total"], view["success_rate"]) == (1, 0, 1, 1.0)
    [(_, sent)] = r.xrange(keys.stream())
    assert sent[b"t"] == b"data.loaded" and sent[b"r"] == b"run1"


def test_finish_failure_goes_to_rq_failed_and_counts(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings())
    xid = create(r, keys, state)
    with r.pipeline() as pipe:
        assert state.finalize(pipe, claimed(xid, {}), Done(3), 1002.0) == "failed"
        pipe.execute()
    assert r.hget(keys.execution(xid), Exec.exit_code) == b"3"
    assert r.zscore(keys.rq_failed("etl"), xid) == 1002.0 + Settings().retention
    assert Job.fetch(xid, connection=r).get_status() == "failed"
    view = stats_view(to_str_dict(r.hgetall(keys.job_stats("load"))))
    assert (view["succeeded"], view["failed"], view["total"], view["success_rate"]) == (0, 1, 1, 0.0)
    assert r.hget(keys.run("run1"), Run.active) == b"0" and r.xlen(keys.stream()) == 0


def test_a_long_tail_is_kept_beside_the_execution_and_a_short_one_in_it(r: redis.Redis, keys: Keys) -> None:
    """A value over 64 bytes would turn the execution's hash into a hashtable (about five times the size)."""
    state = State(keys, Settings())
    short, long = create(r, keys, state), create(r, keys, state)
    r.set(keys.tail(short), "live output")  # written while it ran
    with r.pipeline() as pipe:
        state.finalize(pipe, claimed(short, {}), Done(0, "x" * TAIL_INLINE), 1002.0, live=True)
        state.finalize(pipe, claimed(long, {}), Done(0, "y" * (TAIL_INLINE + 1)), 1002.0)
        pipe.execute()
    assert r.hget(keys.execution(short), Exec.tail) == b"x" * TAIL_INLINE and not r.exists(keys.tail(short))
    assert r.hget(keys.execution(long), Exec.tail) is None and r.get(keys.tail(long)) == b"y" * (TAIL_INLINE + 1)
    assert all(compact(r, keys.execution(x)) for x in (short, long))


def test_job_data_is_one_small_pickle_for_every_execution() -> None:
    assert pickle.loads(job_data()) == ("angora_rq.processes.worker.run_execution", None, (), {})
    assert len(job_data()) <= 64 and DESCRIPTION_MAX <= 64  # hash-max-ziplist-value


def test_finish_writes_every_end_past_a_key_of_the_wrong_type_and_says_what_it_could_not(
        r: redis.Redis, keys: Keys) -> None:
    """A script that fails midway keeps what it wrote before: FINISH used to end an execution and then stop at a
    corrupted run, leaving that run's count, `work`, the worker's inflight list and the other ends unwritten."""
    state = State(keys, Settings())
    quiet = JobDef("quiet", ("go",), ("true",), queue="etl", replay=0)  # sends nothing: FINISH alone
    with r.pipeline() as pipe:
        xids = [state.create(pipe, quiet, Message.create("go", None, run, origin="test"), 1000.0)
                for run in ("run1", "run2", "run3")]
        pipe.execute()
    r.rpush(keys.worker_inflight("w1"), *xids)
    assert r.get(keys.work()) == b"3"
    r.delete(keys.run("run2"))
    r.set(keys.run("run2"), "not a hash")  # the second end's run
    batch = Finished("w1", 1002.0)
    with r.pipeline() as pipe:
        for xid, run in zip(xids, ("run1", "run2", "run3")):
            ex = Claimed(id=xid, spec=quiet, run=run, attempt=1, topic="go", params={}, queue="etl", created=1000.0,
                         version="")
            state.finalize(pipe, ex, Done(0), 1002.0, worker="w1", batch=batch)
        state.record(pipe, batch)
        (reply,) = pipe.execute()
    count, errors = finish_reply(reply)
    assert count == 3 and len(errors) == 1 and "WRONGTYPE" in errors[0]
    assert [fields(r, keys.execution(x))["status"] for x in xids] == ["succeeded"] * 3
    assert r.get(keys.work()) == b"0" and r.llen(keys.worker_inflight("w1")) == 0  # no work left counted
    assert r.hget(keys.run("run1"), Run.active) == b"0" and r.hget(keys.run("run3"), Run.active) == b"0"
    assert stats_view(to_str_dict(r.hgetall(keys.job_stats("quiet"))))["succeeded"] == 3
    assert finish_reply(b"2") == (2, []) and finish_reply(-1) == (-1, [])


def test_finish_still_stops_when_redis_refuses_writes(tmp_path: Path) -> None:
    """Only a key of the wrong type is skipped: a Redis that refuses writes (here a read-only replica; out of
    memory, a failing disk or missing replicas alike) fails FINISH as before, with nothing written, so the worker
    keeps the ends and records them later."""
    server = RedisServer(data_dir=tmp_path, port=free_port(), appendonly=False).start()
    try:
        r = redis.Redis.from_url(server.url)
        keys, state = Keys("ro"), State(Keys("ro"), Settings(prefix="ro"))
        quiet = JobDef("quiet", ("go",), ("true",), queue="etl", replay=0)  # sends nothing: FINISH alone
        with r.pipeline() as pipe:
            xid = state.create(pipe, quiet, Message.create("go", None, "run1", origin="test"), 1000.0)
            pipe.execute()
        r.rpush(keys.worker_inflight("w1"), xid)
        r.replicaof("127.0.0.1", free_port())  # a primary that does not exist: this server only refuses writes now
        ex = Claimed(id=xid, spec=quiet, run="run1", attempt=1, topic="go", params={}, queue="etl", created=1000.0,
                     version="")
        for worker in ("w1", ""):  # with the worker's inflight list, and without one (the janitor's, a stock RQ's)
            with r.pipeline() as pipe:
                state.finalize(pipe, ex, Done(0), 1002.0, worker=worker)
                with pytest.raises(redis.ResponseError, match="READONLY|read only replica"):
                    pipe.execute()
        assert fields(r, keys.execution(xid))["status"] == "queued" and r.llen(keys.worker_inflight("w1")) == 1
    finally:
        server.stop()
