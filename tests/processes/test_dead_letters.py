"""A message the matcher cannot dispatch: the rest of its batch goes through, and it is put aside as a dead letter
with its error (store/deadletters.py), its run and the work budget no longer counting it; against the real
redis-server."""
from __future__ import annotations

import json

import pytest
import redis

from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.schema import Entry, Run
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.processes.matcher import Matcher
from angora_rq.store import bus
from angora_rq.store.connection import RedisConnectionError, ResponseError, lasting
from angora_rq.store.deadletters import read_dead_letters
from angora_testkit import fields

A = JobDef(name="a", triggers=("go",), command=("true",))
SNAP = Snapshot(Config(jobs=(A,), version="v1"))


def matcher(r: redis.Redis, keys: Keys) -> Matcher:
    bus.ensure_group(r, keys)
    return Matcher(r, keys, Settings(prefix=keys.prefix), lambda: SNAP, name="m1")


def pending(r: redis.Redis, keys: Keys) -> int:
    return int(r.xpending(keys.stream(), MATCHER_GROUP)["pending"])


def queued(r: redis.Redis, keys: Keys) -> int:
    return int(r.llen(keys.rq_queue("default")))


def undecodable(r: redis.Redis, keys: Keys) -> str:
    """An entry no SEND wrote: its params are not JSON, its time not a number."""
    return r.xadd(keys.stream(), {Entry.topic: "go", Entry.run: "bad-run", Entry.origin: "api", Entry.sent: "x",
                                  Entry.params: "{"}).decode()


def test_an_entry_that_does_not_decode_is_put_aside_and_holds_up_no_other(r: redis.Redis, keys: Keys) -> None:
    m = matcher(r, keys)
    bus.send(r, keys, Message.create("go", run_id="r1"))
    bad = undecodable(r, keys)
    bus.send(r, keys, Message.create("go", run_id="r2"))
    assert m.step(block_ms=10) == 3  # one batch of three
    assert queued(r, keys) == 2 and pending(r, keys) == 0
    records, total = read_dead_letters(r, keys)
    assert total == 1 and [x["entry"] for x in records] == [bad]
    assert records[0]["fields"][Entry.params] == "{" and records[0]["matcher"] == "m1"
    assert "ValueError" in records[0]["error"] or "JSONDecodeError" in records[0]["error"]
    assert fields(r, keys.run("r1"))["active"] == "1" and fields(r, keys.run("r2"))["active"] == "1"


def test_a_message_whose_dispatch_fails_alone_is_put_aside_and_its_run_ends(r: redis.Redis, keys: Keys) -> None:
    """A second root message of a run whose plan was recorded under a definitions key that is not a hash:
    DISPATCH fails (WRONGTYPE) for that message only. Putting it aside takes it out of its run's count (the run
    ends) and out of `work`; the good message of the same batch is dispatched."""
    m = matcher(r, keys)
    r.hset(keys.run("rb"), mapping={Run.created: "1", Run.plan: "other", Run.config_version: "broken"})
    r.set(keys.definitions("broken"), "not a hash")
    bus.send(r, keys, Message.create("go", run_id="r1"))
    bus.send(r, keys, Message.create("go", run_id="rb"))
    assert fields(r, keys.run("rb"))["active"] == "1" and r.get(keys.work()) == b"2"
    m.step(block_ms=10)
    assert queued(r, keys) == 1 and pending(r, keys) == 0
    records, total = read_dead_letters(r, keys)
    assert total == 1 and "WRONGTYPE" in records[0]["error"] and records[0]["fields"][Entry.run] == "rb"
    run = fields(r, keys.run("rb"))
    assert run["active"] == "0" and "ended" in run
    assert r.get(keys.work()) == b"1"  # r1's queued execution only


def test_a_failed_dispatch_queues_nothing_and_acknowledges_nothing(r: redis.Redis, keys: Keys) -> None:
    """DISPATCH writes its runs' counts, its queues and its acknowledgements last: a script that fails on the
    way (here at the job's stats hash, not a hash) leaves the entry pending and its run counting the message
    only, with nothing queued that a second try would queue again."""
    m = matcher(r, keys)
    r.set(keys.job_stats("a"), "not a hash")
    bus.send(r, keys, Message.create("go", run_id="r1"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        m.step(block_ms=10)  # nothing went through lately: it waits rather than put aside
    assert queued(r, keys) == 0 and pending(r, keys) == 1
    assert fields(r, keys.run("r1"))["active"] == "1" and r.get(keys.work()) == b"1"
    assert read_dead_letters(r, keys) == ([], 0)


def test_when_nothing_goes_through_the_entries_wait_instead_of_being_put_aside(r: redis.Redis, keys: Keys) -> None:
    m = matcher(r, keys)
    undecodable(r, keys)
    undecodable(r, keys)
    with pytest.raises(ValueError):
        m.step(block_ms=10)
    assert pending(r, keys) == 2 and read_dead_letters(r, keys) == ([], 0)
    # Once something goes through, a lone failure is the entry's own: put aside.
    bus.send(r, keys, Message.create("go", run_id="r1"))
    m.step(block_ms=10)
    assert queued(r, keys) == 1
    reread = r.xreadgroup(MATCHER_GROUP, "m1", {keys.stream(): "0"}, count=1)[0][1]
    m.handle([(reread[0][0].decode(), reread[0][1])], 1.0)
    assert pending(r, keys) == 1 and read_dead_letters(r, keys)[1] == 1


def test_a_redis_that_cannot_serve_is_waited_out_not_blamed_on_the_messages() -> None:
    assert not lasting(RedisConnectionError("reset"))
    assert not lasting(redis.exceptions.TimeoutError("slow"))
    assert not lasting(redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"))
    assert not lasting(ResponseError("NOGROUP No such key 'x' or consumer group 'matchers'"))
    assert not lasting(ResponseError("Error running script: @user_script:1: -NOPERM this user has no permissions"))
    assert not lasting(ResponseError("BUSY Redis is busy running a script"))
    assert lasting(ResponseError("Error running script (call to f_x): @user_script:9: WRONGTYPE Operation against "
                                 "a key holding the wrong kind of value"))
    assert lasting(json.JSONDecodeError("Expecting value", "{", 1))


def test_a_lone_entry_is_put_aside_once_it_failed_twice_and_dispatch_itself_runs(
        r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing else goes through the matcher (a /send dispatches most messages itself): an entry that fails alone
    is to blame once it failed again when read a second time (after claim_idle) and a DISPATCH of no message
    runs; if that fails too, the entry waits."""
    m = matcher(r, keys)
    bad = undecodable(r, keys)
    with pytest.raises(ValueError):
        m.step(block_ms=10)  # its first read
    [(entry, entry_fields)] = r.xclaim(keys.stream(), MATCHER_GROUP, "m1", 0, [bad])  # read again
    probe = m.dispatcher.dispatch

    def broken(*args: object) -> object:
        raise ResponseError("ERR Error running script: something broke")
    monkeypatch.setattr(m.dispatcher, "dispatch", broken)
    with pytest.raises(ValueError):
        m.handle([(entry.decode(), entry_fields)], 2.0)
    assert pending(r, keys) == 1 and read_dead_letters(r, keys) == ([], 0)
    monkeypatch.setattr(m.dispatcher, "dispatch", probe)
    m.handle([(entry.decode(), entry_fields)], 3.0)
    assert pending(r, keys) == 0 and [x["entry"] for x in read_dead_letters(r, keys)[0]] == [bad]
