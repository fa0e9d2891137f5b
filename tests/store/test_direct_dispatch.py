"""DISPATCH's direct mode (a worker dispatching what the executions it records send), on the real redis-server."""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import redis

from angora_rq.core.execution import followers
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.schema import Defs, Exec, Metrics, Run
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.processes.matcher import Matcher
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.claiming import claim_call, claimed_ids
from angora_rq.store import bus
from angora_rq.store.dispatch import Dispatcher, Outgoing, record_follow
from angora_rq.store.events import Events
from angora_rq.store.link import Link
from angora_rq.store.state import State
from angora_testkit import hash_as

LOAD = JobDef("load", ("to.load",), ("true",), queue="etl")
INDEX = JobDef("index", ("to.load",), ("true",), queue="etl")
NOW = 2000.0


def direct(r: redis.Redis, keys: Keys, jobs: tuple[JobDef, ...], run_id: str = "run1") -> list[Any]:
    """The direct dispatch of one message of run `run_id` (which counts the execution that sends it) to `jobs`."""
    r.hsetnx(keys.run(run_id), Run.active, 1)
    r.setnx(keys.work(), 1)
    msg = Message("to.load", {"N": "1"}, run_id, "job:a:x1", NOW)
    with r.pipeline() as pipe:
        call, _ = Dispatcher(Link(r), keys, Settings(history=10), "w1").direct(
            Outgoing([("", msg, "")], [(0, job) for job in jobs]), "v1", NOW)
        call.queue(pipe)
        return pipe.execute()


def queued(r: redis.Redis, keys: Keys, queue: str = "etl") -> list[str]:
    return [x.decode() for x in r.lrange(keys.rq_queue(queue), 0, -1)]


def run_chain(r: redis.Redis, keys: Keys, tmp_path: Path, concurrency: int, bell: bool = True) -> dict[str, str]:
    """Run a -> b -> c (follow records of version v1) in one worker of `concurrency` slots, stepped until the run
    has nothing in flight; its run hash. bell=False: CREATE's bell for a is dropped first (nobody listens here), so
    the bell shows only what the chain's own steps ring."""
    a = JobDef("a", ("go",), ("true",), messages=("to.b",), replay=0)
    b = JobDef("b", ("to.b",), ("true",), messages=("to.c",), replay=0)
    c = JobDef("c", ("to.c",), ("true",), replay=0)
    record_follow(r, keys, "v1", Snapshot(Config(jobs=(a, b, c), version="v1")).follow_records(), NOW)
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    with r.pipeline() as pipe:
        State(keys, settings, Events(r, keys)).create(pipe, a, Message.create("go", None, "run1", origin="test"),
                                                      time.time(), config_version="v1")
        pipe.execute()
    if not bell:
        r.delete(keys.bell("default"))
    worker = AngoraWorker(r, keys, settings, concurrency=concurrency, name="w1")
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while r.hget(keys.run("run1"), Run.active) != b"0":
            assert time.monotonic() < deadline, r.hgetall(keys.run("run1"))
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    return hash_as(r, keys.run("run1"), Run)


def test_a_direct_dispatch_creates_and_counts_and_leaves_nothing_for_a_matcher(r: redis.Redis, keys: Keys) -> None:
    assert direct(r, keys, (LOAD, INDEX)) == [[2]]
    ids = queued(r, keys)
    assert len(ids) == 2
    ex = hash_as(r, keys.execution(ids[0]), Exec)
    assert (ex["job"], ex["run"], ex["status"], ex["origin"], ex["config_version"], json.loads(ex["params"])) == (
        "load", "run1", "queued", "job:a:x1", "v1", {"N": "1"})
    assert r.hget(keys.run("run1"), Run.active) == b"3" and r.get(keys.work()) == b"3"  # the sender, and two
    assert r.hget(keys.metrics(), Metrics.messages + "job") == b"1"
    assert json.loads(r.hget(keys.definitions("v1"), Defs.job + "load")) == LOAD.to_json()
    assert not r.exists(keys.stream())  # no entry: no matcher can dispatch it a second time


def test_a_direct_dispatch_creates_nothing_in_a_canceled_run(r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.run("run1"), mapping={Run.canceled: 1, Run.active: 1})
    assert direct(r, keys, (LOAD,)) == [[0]]
    assert queued(r, keys) == [] and r.hget(keys.run("run1"), Run.active) == b"1" and r.get(keys.work()) == b"1"


def test_a_direct_dispatch_holds_a_paused_job_and_gates_an_approval(r: redis.Redis, keys: Keys) -> None:
    r.sadd(keys.paused_jobs(), "load")
    gate = JobDef("gate", ("to.load",), ("true",), queue="etl", approval=True)
    assert direct(r, keys, (LOAD, gate)) == [[2]]
    [held] = [x.decode() for x in r.lrange(keys.paused_held("load"), 0, -1)]
    assert r.hget(keys.execution(held), Exec.status) == b"held"
    [waiting] = [x.decode() for x in r.zrange(keys.approvals(), 0, -1)]
    assert r.hget(keys.execution(waiting), Exec.status) == b"awaiting_approval"
    assert queued(r, keys) == []


def test_a_direct_dispatch_keeps_the_concurrency_limit(r: redis.Redis, keys: Keys) -> None:
    one = JobDef("one", ("to.load",), ("true",), queue="etl", concurrency=1)
    direct(r, keys, (one,), "run1")
    direct(r, keys, (one,), "run2")
    reply = claim_call(keys, Settings(), "w1", ("etl",), NOW, 2).run(Link(r))
    assert len(claimed_ids(reply)) == 1  # one started; the other waits for the slot
    assert len(r.lrange(keys.held("one"), 0, -1)) == 1


def test_follow_records_leave_joins_to_the_matcher() -> None:
    a = JobDef("a", ("go",), ("true",), messages=("to.b", "to.j"), on_failure=("oops",))
    b = JobDef("b", ("to.b",), ("true",))
    j = JobDef("j", ("to.j",), ("true",), parent_success=True)
    records = Snapshot(Config(jobs=(a, b, j), version="v1")).follow_records()
    assert set(records) == {"a"}
    assert [x.name for x in followers(records["a"], "to.b") or ()] == ["b"]
    assert followers(records["a"], "oops") == ()  # no follower: dispatched (to nothing) all the same
    assert followers(records["a"], "to.j") is None  # a join: the stream, for a matcher


def test_a_worker_runs_a_chain_without_the_stream_and_events_are_published_once(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """a -> b -> c in one worker: each next step is created in the transaction that records the one before, and
    the claim riding on it starts it; every execution's and the run's events are published once."""
    r.hset(keys.events(), mapping={t: "w" for t in ("angora.execution.succeeded", "angora.run.succeeded")})
    run = run_chain(r, keys, tmp_path, concurrency=1)
    assert [run["s:" + j] for j in "abc"] == ["succeeded"] * 3
    assert not r.exists(keys.stream())  # no matcher ran, and none had anything to do
    topics = [json.loads(e)["event"] for e in reversed(r.lrange(keys.webhook_outbox(), 0, -1))]
    assert sorted(topics) == ["angora.execution.succeeded"] * 3 + ["angora.run.succeeded"], topics
    assert r.get(keys.work()) == b"0"
    assert r.hget(keys.definitions("v1"), Defs.follow + "c") is None  # c sends nothing
    # A chain keeps the definitions version it started with (its follow records are that version's).
    assert {r.hget(keys.execution(run["e:" + j]), Exec.config_version) for j in "bc"} == {b"v1"}


def commands_during(r: redis.Redis, work: Callable[[], Any]) -> list[list[str]]:
    """Every command Redis ran (scripts' own included) while `work` ran, split into words (MONITOR)."""
    stop, seen = "angora-test-end-" + uuid.uuid4().hex, []
    with r.monitor() as m:
        def read() -> None:
            for line in m.listen():
                if stop in line["command"]:
                    return
                seen.append(line["command"].split())
        reader = threading.Thread(target=read)
        reader.start()
        try:
            work()
        finally:
            r.echo(stop)
            reader.join(30)
    return seen


def test_a_step_that_starts_its_follow_up_writes_its_run_once_and_moves_no_counter(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """RECORD: its DISPATCH hands the run's count and fields to its FINISH, so the end of a, which creates b in the
    same run, nets +1 and -1 to nothing and writes the run with one HSET (five commands fewer per step)."""
    seen = commands_during(r, lambda: run_chain(r, keys, tmp_path, concurrency=1))
    run_key, work_key = keys.run("run1"), keys.work()
    on_work = [c[0].upper() for c in seen if len(c) > 1 and c[1] == work_key]
    counted = [c[3] for c in seen if c[:3] == ["HINCRBY", run_key, Run.active]]
    assert (on_work, counted) == (["INCR", "INCRBY"], ["1", "-1"])  # a created; c ended (nothing in flight)
    writes = [c[2:] for c in seen if c[:2] == ["HSET", run_key]]
    for step, follow_up in (("a", "b"), ("b", "c")):
        one = [w for w in writes if Run.job_status + follow_up in w and Run.job_status + step in w]
        assert len(one) == 1 and one[0][one[0].index(Run.job_status + step) + 1] == "succeeded", writes
    assert r.hget(run_key, Run.active) == b"0" and r.get(work_key) == b"0"


def test_a_fan_out_into_one_run_writes_the_run_in_parts(r: redis.Redis, keys: Keys) -> None:
    """100 messages of one run, each to 15 jobs: 1,500 executions whose fields (3 each) go into the run's hash,
    past the ~8,000 values Redis' Lua can unpack at once (one HSET used to fail the whole dispatch)."""
    jobs = tuple(JobDef(f"j{i}", ("to.load",), ("true",), queue="etl") for i in range(15))
    r.hset(keys.run("run1"), Run.active, 100)
    r.set(keys.work(), 100)
    msgs = [("", Message("to.load", {}, "run1", f"job:a:x{m}", NOW), "") for m in range(100)]
    call, _ = Dispatcher(Link(r), keys, Settings(history=10), "w1").direct(
        Outgoing(msgs, [(m, job) for m in range(100) for job in jobs]), "v1", NOW)
    assert call.run(Link(r)) == [1500]
    run = {k.decode(): v.decode() for k, v in r.hgetall(keys.run("run1")).items()}
    assert sum(1 for k in run if k.startswith(Run.execution)) == 1500
    assert run[Run.active] == "1600" and r.get(keys.work()) == b"1600"  # the 100 senders, and 1,500 executions
    assert len(queued(r, keys)) == 1500


def test_no_bell_rings_for_what_the_workers_own_claim_takes(r: redis.Redis, keys: Keys) -> None:
    """`spare` (the free slots of the CLAIM that follows a worker's RECORD): executions that fit in it ring no
    bell, which would wake another worker for a claim that finds nothing; more than it ring as before."""
    def dispatch(run_id: str, jobs: tuple[JobDef, ...], spare: int) -> None:
        msg = Message("to.load", {}, run_id, "job:a:x1", NOW)
        call, _ = Dispatcher(Link(r), keys, Settings(history=10), "w1").direct(
            Outgoing([("", msg, "")], [(0, job) for job in jobs]), "v1", NOW, spare)
        call.run(Link(r))

    dispatch("run1", (LOAD, INDEX), spare=2)
    assert len(queued(r, keys)) == 2 and r.llen(keys.bell("etl")) == 0
    dispatch("run2", (LOAD, INDEX), spare=1)
    assert len(queued(r, keys)) == 4 and r.llen(keys.bell("etl")) == 2
    dispatch("run3", (LOAD,), spare=0)
    assert r.llen(keys.bell("etl")) == 3


def test_a_chain_in_a_worker_with_a_free_slot_wakes_no_other_worker(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """a -> b -> c on the worker's own queue: each next step is claimed in the round trip that records the one
    before, so no bell is rung for it (only the first, created by CREATE, rang one)."""
    run = run_chain(r, keys, tmp_path, concurrency=2, bell=False)
    assert [run["s:" + j] for j in "abc"] == ["succeeded"] * 3
    assert r.llen(keys.bell("default")) == 0


def test_without_a_follow_record_the_message_goes_to_the_stream(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """A version no matcher recorded follow records for (or an older release's data): the matcher's path."""
    a = JobDef("a", ("go",), ("true",), messages=("to.b",), replay=0)
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    with r.pipeline() as pipe:
        State(keys, settings).create(pipe, a, Message.create("go", None, "run1", origin="test"), time.time(),
                                     config_version="v2")
        pipe.execute()
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while r.hget(keys.run("run1"), Run.job_status + "a") != b"succeeded":
            assert time.monotonic() < deadline
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    [(_, entry)] = r.xrange(keys.stream())
    assert Message.from_fields(entry).topic == "to.b" and r.hget(keys.run("run1"), Run.active) == b"1"


def test_a_matcher_records_follow_records_once_per_version_and_again_if_redis_lost_them(
        r: redis.Redis, keys: Keys) -> None:
    a = JobDef("a", ("go",), ("true",), messages=("to.b",))
    b = JobDef("b", ("to.b",), ("true",))
    snap = Snapshot(Config(jobs=(a, b), version="v1"))
    matcher = Matcher(r, keys, Settings(), lambda: snap, name="m1")
    bus.ensure_group(r, keys)
    matcher.step(block_ms=1, now=NOW)
    field = Defs.follow + "a"
    assert followers(r.hget(keys.definitions("v1"), field).decode(), "to.b") == (b,)
    assert r.zscore(keys.definitions_index(), "v1") == NOW
    r.delete(keys.definitions("v1"))  # a Redis that restarted empty
    matcher.step(block_ms=1, now=NOW + 1)
    assert not r.exists(keys.definitions("v1"))  # not written again every step
    matcher.step(block_ms=1, now=NOW + 61)
    assert r.hexists(keys.definitions("v1"), field) and r.zscore(keys.definitions_index(), "v1") == NOW + 61


def test_a_record_whose_dispatch_fails_leaves_its_executions_owned_and_sends_through_the_stream(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """RECORD takes its executions out of the worker's inflight list first; its DISPATCH failing (a key of the wrong
    type: corrupted data) must put them back, or a worker killed before its fenced retry leaves them running with no
    owner. The retry then records the end with its message on the stream, once."""
    a = JobDef("a", ("go",), ("true",), messages=("to.b",), replay=0)
    b = JobDef("b", ("to.b",), ("true",), replay=0)
    record_follow(r, keys, "v1", Snapshot(Config(jobs=(a, b), version="v1")).follow_records(), NOW)
    r.set(keys.job_executions("b"), "not a list")  # DISPATCH's history write for b fails
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    with r.pipeline() as pipe:
        xid = State(keys, settings).create(pipe, a, Message.create("go", None, "run1", origin="test"), time.time(),
                                           config_version="v1")
        pipe.execute()
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    owned_after_the_failure: list[bool] = []
    try:
        deadline = time.monotonic() + 30
        while worker.active or worker.outbox or r.hget(keys.execution(xid), Exec.status) == b"queued":
            assert time.monotonic() < deadline
            try:
                worker.step(max_wait=0.05)
            except redis.ResponseError as e:  # run() logs it and steps again
                assert "RECORD" in str(e) and "WRONGTYPE" in str(e)
                owned_after_the_failure.append(r.lpos(keys.worker_inflight("w1"), xid) is not None)
    finally:
        worker.close()
    assert owned_after_the_failure == [True]
    assert r.hget(keys.execution(xid), Exec.status) == b"succeeded" and r.llen(keys.worker_inflight("w1")) == 0
    assert r.xlen(keys.stream()) == 1 and queued(r, keys, "default") == []  # b: from the stream, by a matcher
