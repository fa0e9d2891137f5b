"""The stream bus and the matcher against a real redis-server: budgets, trimming, exactly-once dispatch."""
from __future__ import annotations

import dataclasses
import json

import pytest
import redis

from angora_rq import bus
from angora_rq import keys as K
from angora_rq.errors import Unavailable
from angora_rq.keys import MATCHER_GROUP, Keys
from angora_rq.matcher import Matcher
from angora_rq.messages import Message
from angora_rq.model import Config, JobDef
from angora_rq.settings import Settings
from angora_rq.snapshot import Snapshot


def snap(*jobs: JobDef) -> Snapshot:
    return Snapshot(Config(jobs=tuple(jobs), version="v1"))


A = JobDef(name="a", triggers=("go",), command=("true",), messages=("a.done",))
B = JobDef(name="b", triggers=("a.done",), command=("true",))
C = JobDef(name="c", triggers=("go.#",), command=("true",))


def test_send_counts_the_message_in_its_run(r: redis.Redis, keys: Keys) -> None:
    msg = Message.create("go", {"X": "1"}, "run-1", origin="test")
    entry = bus.send(r, keys, msg)
    assert r.xlen(keys.stream()) == 1 and entry
    run = r.hgetall(keys.run("run-1"))
    assert run[b"active"] == b"1" and run[b"topic"] == b"go" and run[b"origin"] == b"test"
    assert r.zscore(keys.runs(), "run-1") is not None


def test_backlog_budget_refuses_instead_of_losing(r: redis.Redis, keys: Keys) -> None:
    for _ in range(3):
        bus.send(r, keys, Message.create("go"), backlog=3)
    with pytest.raises(Unavailable) as e:
        bus.send(r, keys, Message.create("go"), backlog=3)
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
    run = {k.decode(): v.decode() for k, v in r.hgetall(keys.run("r1")).items()}
    assert json.loads(run["plan"])["jobs"] == ["a", "c", "b"]  # `go.#` matches `go` too ('#' = zero or more)
    assert run["active"] == "2" and run["s:a"] == "queued" and run["s:c"] == "queued"
    assert r.llen(K.rq_queue("default")) == 2
    assert r.xpending(keys.stream(), MATCHER_GROUP)["pending"] == 0


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
    assert slow.process(stale, now=0.0) == 0  # the dedupe guards stop a second dispatch
    assert r.llen(K.rq_queue("default")) == 40  # 20 messages x 2 jobs (a, and c through go.#)


def test_without_dedupe_the_same_race_dispatches_twice(r: redis.Redis, keys: Keys) -> None:
    """The control: the naive matcher double-dispatches in the very same race (so the test above can fail)."""
    settings = dataclasses.replace(Settings(prefix=keys.prefix), claim_idle=0.0)
    s = snap(A)
    bus.ensure_group(r, keys)
    for i in range(5):
        bus.send(r, keys, Message.create("go", run_id=f"r{i}"))
    slow = Matcher(r, keys, settings, lambda: s, name="slow", dedupe=False)
    stale = slow._read(block_ms=10)
    fast = Matcher(r, keys, settings, lambda: s, name="fast", dedupe=False)
    fast._own_pending_done = True
    fast.step(block_ms=10)
    slow.process(stale, now=0.0)
    assert r.llen(K.rq_queue("default")) == 10


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
    r.hset(keys.run("run"), "s:p1", "succeeded")
    bus.send(r, keys, Message("p.done", {}, "run", "job:p1:x", 1.0))
    m.step(block_ms=10)
    assert r.hget(keys.run("run"), "s:j") is None
    # p2 succeeded too: both of their messages arrive in one batch; the join fires once.
    r.hset(keys.run("run"), "s:p2", "succeeded")
    bus.send(r, keys, Message("p.done", {}, "run", "job:p2:y", 2.0))
    bus.send(r, keys, Message("p.done", {}, "run", "job:p2:y", 2.0))
    m.step(block_ms=10)
    assert r.hget(keys.run("run"), "n:j") == b"1"


def test_redis_out_of_memory_is_unavailable_not_a_crash(r: redis.Redis, keys: Keys) -> None:
    """With maxmemory + noeviction, writes fail with OOM (facts.md): sending must say 503, never crash."""
    r.config_set("maxmemory", "1")  # this test's server is the session's own: restore right after
    try:
        with pytest.raises(Unavailable) as e:
            bus.send(r, keys, Message.create("go"))
        assert e.value.status == 503
    finally:
        r.config_set("maxmemory", "0")
