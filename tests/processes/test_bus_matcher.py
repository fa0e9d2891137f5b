"""The stream bus and the matcher against a real redis-server: budgets, trimming, exactly-once dispatch."""
from __future__ import annotations

import dataclasses

import pytest
import redis
from rq.job import Job

from angora_rq.store import bus
from angora_rq.core import keys as K
from angora_rq.core.errors import Overloaded, Unavailable
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.processes.matcher import Matcher
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.pressure import Budget
from angora_rq.core.settings import Settings
from angora_rq.core.schema import Exec, Run
from angora_rq.core.snapshot import Snapshot
from angora_rq.store.queries import Queries
from angora_testkit import fields
from naive_matcher import NaiveMatcher


def plan(r: redis.Redis, keys: Keys, run_id: str) -> dict:
    """A run's plan, as the queries read it (through its ref)."""
    return Queries(r, keys).run(run_id)["plan"]


def snap(*jobs: JobDef) -> Snapshot:
    return Snapshot(Config(jobs=tuple(jobs), version="v1"))


A = JobDef(name="a", triggers=("go",), command=("true",), messages=("a.done",))
B = JobDef(name="b", triggers=("a.done",), command=("true",))
C = JobDef(name="c", triggers=("go.#",), command=("true",))


def test_send_counts_the_message_in_its_run(r: redis.Redis, keys: Keys) -> None:
    msg = Message.create("go", {"X": "1"}, "run-1", origin="test")
    entry = bus.send(r, keys, msg)
    assert r.xlen(keys.stream()) == 1 and entry
    run = fields(r, keys.run("run-1"))
    assert run["active"] == "1" and run["topic"] == "go" and run["origin"] == "test"
    assert r.zscore(keys.runs(), "run-1") is not None


def test_work_budget_refuses_instead_of_losing(r: redis.Redis, keys: Keys) -> None:
    for _ in range(3):
        bus.send(r, keys, Message.create("go"), Budget(work=3))
    with pytest.raises(Overloaded) as e:
        bus.send(r, keys, Message.create("go"), Budget(work=3))
    assert e.value.status == 503
    assert r.xlen(keys.stream()) == 3


def test_trim_keeps_undelivered_and_pending_entries(r: redis.Redis, keys: Keys) -> None:
    bus.ensure_group(r, keys)
    ids = [bus.send(r, keys, Message.create("go")) for _ in range(10)]
    got = r.xreadgroup(MATCHER_GROUP, "m1", {keys.stream(): ">"}, count=6)[0][1]
    r.xack(keys.stream(), MATCHER_GROUP, *[i for i, _ in got[:3]])  # 3 acked, 3 pending, 4 undelivered
    bus.trim(r, keys)
    left = [i.decode() for i, _ in r.xrange(keys.stream())]
    assert left == ids[3:]
    r.xack(keys.stream(), MATCHER_GROUP, *[i for i, _ in got[3:]])
    bus.trim(r, keys)
    assert [i.decode() for i, _ in r.xrange(keys.stream())] == ids[6:]


def test_matcher_dispatches_plans_and_acks(r: redis.Redis, keys: Keys) -> None:
    settings = Settings(prefix=keys.prefix)
    s = snap(A, B, C)
    m = Matcher(r, keys, settings, lambda: s, name="m1")
    bus.ensure_group(r, keys)
    bus.send(r, keys, Message.create("go", run_id="r1"))
    assert m.step(block_ms=10) == 1
    run = fields(r, keys.run("r1"))
    assert plan(r, keys, "r1")["jobs"] == ["a", "c", "b"]  # `go.#` matches `go` too ('#' = zero or more)
    assert run["active"] == "2" and run["s:a"] == "queued" and run["s:c"] == "queued"
    assert r.llen(keys.rq_queue("default")) == 2
    assert r.xpending(keys.stream(), MATCHER_GROUP)["pending"] == 0


def test_the_matcher_lingers_after_a_partial_batch_only(r: redis.Redis, keys: Keys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a batch smaller than a full one (load, but not a backlog) the loop waits `linger` before reading
    again, so the next batch is bigger; after an empty read (idle: it blocked already) or a full batch (a backlog)
    it reads again at once."""
    from angora_rq.processes import matcher as matcher_module
    m = Matcher(r, keys, Settings(prefix=keys.prefix), lambda: snap(A), name="m1", batch_size=100, linger=0.25)
    counts = iter([3, 0, 100, 1])
    slept: list[float] = []

    def step() -> int:
        n = next(counts, None)
        if n is None:
            m.stopping = True
            return 0
        slept.append(-n)  # mark each step in the same list, to see what follows it
        return n

    monkeypatch.setattr(m, "step", step)
    monkeypatch.setattr(matcher_module.time, "sleep", slept.append)
    m.run()
    assert slept == [-3, 0.25, 0, -100, -1, 0.25]


def test_a_claimed_entry_is_dispatched_once_even_if_the_slow_matcher_wakes_up(r: redis.Redis, keys: Keys) -> None:
    settings = dataclasses.replace(Settings(prefix=keys.prefix), claim_idle=0.0)
    s = snap(A, C)
    bus.ensure_group(r, keys)
    for i in range(20):
        bus.send(r, keys, Message.create("go", run_id=f"r{i}"))
    slow = Matcher(r, keys, settings, lambda: s, name="slow")
    stale = slow._read(block_ms=10)  # read, then "stall" before dispatching
    assert len(stale) == 20
    fast = Matcher(r, keys, settings, lambda: s, name="fast")
    fast._own_pending_done = True
    assert fast.step(block_ms=10) == 20  # claims the stalled entries (XAUTOCLAIM)
    assert slow.process(stale, now=0.0) == 0  # no longer its entries (claimed, then acknowledged): nothing twice
    assert r.llen(keys.rq_queue("default")) == 40  # 20 messages x 2 jobs (a, and c through go.#)


def test_without_dedupe_the_same_race_dispatches_twice(r: redis.Redis, keys: Keys) -> None:
    """The control: the naive matcher double-dispatches in the very same race (so the test above can fail)."""
    settings = dataclasses.replace(Settings(prefix=keys.prefix), claim_idle=0.0)
    s = snap(A)
    bus.ensure_group(r, keys)
    for i in range(5):
        bus.send(r, keys, Message.create("go", run_id=f"r{i}"))
    slow = NaiveMatcher(r, keys, settings, lambda: s, name="slow")
    stale = slow._read(block_ms=10)
    fast = NaiveMatcher(r, keys, settings, lambda: s, name="fast")
    fast._own_pending_done = True
    fast.step(block_ms=10)
    slow.process(stale, now=0.0)
    assert r.llen(keys.rq_queue("default")) == 10


def test_parent_success_join_fires_once_when_every_parent_succeeded(r: redis.Redis, keys: Keys) -> None:
    p1 = JobDef(name="p1", triggers=("go",), command=("true",), messages=("p.done",))
    p2 = JobDef(name="p2", triggers=("go",), command=("true",), messages=("p.done",))
    j = JobDef(name="j", triggers=("p.done",), command=("true",), parent_success=True)
    s = snap(p1, p2, j)
    settings = Settings(prefix=keys.prefix)
    m = Matcher(r, keys, settings, lambda: s, name="m")
    bus.ensure_group(r, keys)
    bus.send(r, keys, Message.create("go", run_id="run"))
    m.step(block_ms=10)
    # p1 succeeded and sent p.done: p2 has not finished, so the join waits.
    r.hset(keys.run("run"), Run.job_status + "p1", "succeeded")
    bus.send(r, keys, Message("p.done", {}, "run", "job:p1:x", 1.0))
    m.step(block_ms=10)
    assert r.hget(keys.run("run"), Run.job_status + "j") is None
    # p2 succeeded too: both of their messages arrive in one batch; the join fires once.
    r.hset(keys.run("run"), Run.job_status + "p2", "succeeded")
    bus.send(r, keys, Message("p.done", {}, "run", "job:p2:y", 2.0))
    bus.send(r, keys, Message("p.done", {}, "run", "job:p2:y", 2.0))
    m.step(block_ms=10)
    assert fields(r, keys.run("run"))["n:j"] == "1"


def test_redis_out_of_memory_is_unavailable_not_a_crash(r: redis.Redis, keys: Keys) -> None:
    """With maxmemory + noeviction, writes fail with OOM while reads work: sending must say 503, never crash."""
    r.config_set("maxmemory", "1")  # this test's server is the session's own: restore right after
    try:
        with pytest.raises(Unavailable) as e:
            bus.send(r, keys, Message.create("go"))
        assert e.value.status == 503
    finally:
        r.config_set("maxmemory", "0")


def test_a_dispatched_execution_is_recorded_as_state_create_records_it(r: redis.Redis, keys: Keys) -> None:
    """The batch script (DISPATCH) and the single-execution path (CREATE) write the same records."""
    from angora_rq.store.state import State

    job = dataclasses.replace(A, queue="etl", timeout=30.0, concurrency=2)
    settings = Settings(prefix=keys.prefix)
    m = Matcher(r, keys, settings, lambda: snap(job), name="m")
    bus.ensure_group(r, keys)
    bus.send(r, keys, Message.create("go", {"N": "1"}, "r1", origin="test"))
    assert m.step(block_ms=10, now=1000.0) == 1
    (xid,) = [x.decode() for x in r.lrange(keys.rq_queue("etl"), 0, -1)]
    with r.pipeline() as pipe:
        other = State(keys, settings).create(pipe, job, Message.create("go", {"N": "1"}, "r2", origin="test"), 1000.0,
                                             config_version="v1")
        pipe.execute()
    for key in (keys.execution, K.rq_job):
        mine, theirs = fields(r, key(xid)), fields(r, key(other))
        assert mine.keys() == theirs.keys()
        differ = {f for f in mine if mine[f] != theirs[f]}
        # Only what names the execution's run may differ.
        assert differ <= {"run", "description"}, differ
        assert r.ttl(key(xid)) == -1
    assert Job.fetch(xid, connection=r).args == ()
    assert [x.decode() for x in r.lrange(keys.job_executions(job.name), 0, -1)] == [other, xid]
    assert fields(r, keys.run("r1"))["x:" + xid] == job.name
    assert fields(r, keys.job_stats(job.name))["last_execution"] == other  # the later of the two


def test_a_second_root_message_merges_its_plan_into_the_run(r: redis.Redis, keys: Keys) -> None:
    d = JobDef(name="d", triggers=("other",), command=("true",))
    s = snap(A, B, d)
    m = Matcher(r, keys, Settings(prefix=keys.prefix), lambda: s, name="m")
    bus.ensure_group(r, keys)
    bus.send(r, keys, Message.create("go", run_id="r1"))
    m.step(block_ms=10)
    assert plan(r, keys, "r1")["jobs"] == ["a", "b"]
    bus.send(r, keys, Message.create("other", run_id="r1"))  # another batch: the script hands the old plan back
    m.step(block_ms=10)
    assert plan(r, keys, "r1")["jobs"] == ["a", "b", "d"]
    bus.send(r, keys, Message.create("go", run_id="r2"))
    bus.send(r, keys, Message.create("other", run_id="r2"))  # the same batch
    assert m.step(block_ms=10) == 2
    assert plan(r, keys, "r2")["jobs"] == ["a", "b", "d"]
    run = fields(r, keys.run("r2"))
    assert run["n:a"] == "1" and run["n:d"] == "1"


def test_a_canceled_run_dispatches_nothing_and_its_messages_are_acknowledged(r: redis.Redis, keys: Keys) -> None:
    m = Matcher(r, keys, Settings(prefix=keys.prefix), lambda: snap(A, C), name="m")
    bus.ensure_group(r, keys)
    bus.send(r, keys, Message.create("go", run_id="r1"))
    r.hset(keys.run("r1"), Run.canceled, "1")
    bus.send(r, keys, Message.create("go", run_id="r2"))
    assert m.step(block_ms=10) == 2
    assert r.llen(keys.rq_queue("default")) == 2  # a and c of r2 only
    assert fields(r, keys.run("r1"))["active"] == "0" and "n:a" not in fields(r, keys.run("r1"))
    assert fields(r, keys.run("r2"))["active"] == "2"
    assert r.xpending(keys.stream(), MATCHER_GROUP)["pending"] == 0


def test_a_topic_that_starts_many_jobs_queues_them_all_in_order(r: redis.Redis, keys: Keys) -> None:
    """100 messages x 120 jobs in one batch: 12,000 executions pushed to one queue (more than Lua's unpack limit)."""
    jobs = [JobDef(name=f"j{i:03}", triggers=("wide",), command=("true",)) for i in range(120)]
    s = snap(*jobs)
    m = Matcher(r, keys, Settings(prefix=keys.prefix), lambda: s, name="m")
    bus.ensure_group(r, keys)
    for i in range(100):
        bus.send(r, keys, Message.create("wide", run_id=f"r{i}"))
    assert m.step(block_ms=10) == 100
    queued = [x.decode() for x in r.lrange(keys.rq_queue("default"), 0, -1)]
    assert len(queued) == 12_000
    names = [r.hget(keys.execution(x), Exec.job).decode() for x in queued[:240]]
    assert names == [j.name for j in jobs] * 2  # message by message, each in definition order
    assert r.hget(keys.run("r99"), Run.active) == b"120"
