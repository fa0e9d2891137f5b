"""SEND, TICK (which includes SEND) and the schedulers' lease scripts on the real redis-server, called directly
(SEND through bus.send; no scheduler runs)."""
from __future__ import annotations

from typing import Any

import pytest
import redis

from angora_rq.core.errors import Overloaded
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Run
from angora_rq.core.messages import Message, fingerprint
from angora_rq.core.pressure import MEMORY_RETRY_AFTER, MESSAGE_BYTES, WORK_RETRY_AFTER, Budget, Memory
from angora_rq.store import bus
from angora_rq.store.link import Link
from angora_rq.store.scripts import ACQUIRE, RENEW, RESIGN, TICK, field_pairs
from angora_testkit import hash_as

T = 1_700_000_000_000  # a tick, in ms


def h(r: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


# -- SEND ------------------------------------------------------------------------------------------------------

def test_send_adds_the_entry_and_creates_and_counts_its_run(r: redis.Redis, keys: Keys) -> None:
    msg = Message.create("data.ready", {"N": "1"}, "run1", origin="http", now=1000.0)
    entry = bus.send(r, keys, msg)
    [(got, fields)] = r.xrange(keys.stream())
    assert got.decode() == entry and {k.decode(): v.decode() for k, v in fields.items()} == msg.to_fields()
    assert hash_as(r, keys.run("run1"), Run) == {"created": "1000.0", "topic": "data.ready", "origin": "http",
                                                 "active": "1"}
    assert r.zscore(keys.runs(), "run1") == 1000.0


def test_a_second_root_message_in_a_run_counts_but_keeps_the_runs_fields(r: redis.Redis, keys: Keys) -> None:
    bus.send(r, keys, Message.create("data.ready", None, "run1", origin="http", now=1000.0))
    bus.send(r, keys, Message.create("other", None, "run1", origin="cli", now=1001.0))
    run = hash_as(r, keys.run("run1"), Run)
    assert (run["active"], run["topic"], run["origin"], run["created"]) == ("2", "data.ready", "http", "1000.0")
    assert r.xlen(keys.stream()) == 2 and r.zscore(keys.runs(), "run1") == 1000.0


def test_send_over_the_work_budget_changes_nothing(r: redis.Redis, keys: Keys) -> None:
    for i in range(2):
        bus.send(r, keys, Message.create("t", None, f"run{i}"), Budget(work=2))
    assert r.get(keys.work()) == b"2" and r.get(keys.accepted()) == b"2"
    with pytest.raises(Overloaded, match="accepted work is not finished") as refused:
        bus.send(r, keys, Message.create("t", None, "run9"), Budget(work=2))
    assert refused.value.status == 503 and refused.value.retry_after == WORK_RETRY_AFTER
    assert refused.value.detail == {"budget": "work", "used": 2, "limit": 2, "retry_after": WORK_RETRY_AFTER}
    assert r.xlen(keys.stream()) == 2 and not r.exists(keys.run("run9")) and r.get(keys.work()) == b"2"
    assert r.get(keys.accepted()) == b"2"
    bus.send(r, keys, Message.create("t", None, "run9"), Budget(work=0))  # 0: no budget
    assert r.xlen(keys.stream()) == 3 and r.get(keys.work()) == b"3"


def test_the_work_budget_counts_messages_in_flight_not_the_stream(r: redis.Redis, keys: Keys) -> None:
    """A message whose work finished frees its place, even while its entry is still on the stream."""
    bus.send(r, keys, Message.create("t", None, "run1"), Budget(work=1))
    r.decr(keys.work())  # what DISPATCH (nothing to start) or FINISH does
    bus.send(r, keys, Message.create("t", None, "run2"), Budget(work=1))
    assert r.xlen(keys.stream()) == 2


def test_send_past_the_memory_budget_changes_nothing(r: redis.Redis, keys: Keys) -> None:
    """The memory budget allows (limit - used) / MESSAGE_BYTES root messages past the reading's `accepted`."""
    room = Memory(used=1000, limit=1000 + 2 * MESSAGE_BYTES, source="maxmemory", accepted=0)
    for i in range(2):
        bus.send(r, keys, Message.create("t", None, f"run{i}"), Budget(memory=room))
    with pytest.raises(Overloaded, match="memory budget") as refused:
        bus.send(r, keys, Message.create("t", None, "run9"), Budget(memory=room))
    assert refused.value.retry_after == MEMORY_RETRY_AFTER and refused.value.detail["budget"] == "memory"
    assert r.xlen(keys.stream()) == 2 and not r.exists(keys.run("run9"))
    assert r.get(keys.work()) == b"2" and r.get(keys.accepted()) == b"2"  # moved, then moved back
    full = Memory(used=5000, limit=4000, source="ANGORA_MAX_MEMORY", accepted=2)
    with pytest.raises(Overloaded, match="memory budget"):
        bus.send(r, keys, Message.create("t", None, "run9"), Budget(memory=full))
    bus.send(r, keys, Message.create("t", None, "run9"), Budget(memory=Memory(5000, 0, "", 2)))  # no limit
    assert r.xlen(keys.stream()) == 3


# -- ACQUIRE, RENEW, RESIGN ------------------------------------------------------------------------------------

def acquire(r: redis.Redis, keys: Keys, holder: str, ttl_ms: int = 3000) -> int:
    return int(ACQUIRE.bind(lease=keys.scheduler_lease(), fence=keys.scheduler_fence(), holder=holder,
                            ttl_ms=ttl_ms).run(Link(r)))


def test_the_lease_goes_to_one_holder_with_a_new_token_per_term(r: redis.Redis, keys: Keys) -> None:
    assert acquire(r, keys, "a") == 1
    assert acquire(r, keys, "a") == 0 and acquire(r, keys, "b") == 0  # held: neither takes it again
    assert r.get(keys.scheduler_lease()) == b"a 1" and r.get(keys.scheduler_fence()) == b"1"
    r.delete(keys.scheduler_lease())  # expired
    assert acquire(r, keys, "b") == 2 and r.get(keys.scheduler_lease()) == b"b 2"


def test_only_the_holders_term_renews_or_resigns(r: redis.Redis, keys: Keys) -> None:
    lease, link = keys.scheduler_lease(), Link(r)
    acquire(r, keys, "a", ttl_ms=1000)
    assert RENEW.bind(lease=lease, value="a 0", ttl_ms=60_000).run(link) == 0
    assert r.pttl(lease) <= 1000
    assert RENEW.bind(lease=lease, value="a 1", ttl_ms=60_000).run(link) == 1
    assert r.pttl(lease) > 1000
    assert RESIGN.bind(lease=lease, value="b 1").run(link) == 0 and r.exists(lease)
    assert RESIGN.bind(lease=lease, value="a 1").run(link) == 1 and not r.exists(lease)
    assert RESIGN.bind(lease=lease, value="a 1").run(link) == 0  # twice: nothing more


# -- TICK ------------------------------------------------------------------------------------------------------

def tick(r: redis.Redis, keys: Keys, tick_ms: int, run_id: str, token: int = 1, lease_value: str = "a 1",
         mode: str = "send", overlap: str = "allow", budget: int = 0) -> tuple[str, str]:
    msg = Message.create("beat", {"K": "v"}, run_id, origin="schedule:s", now=tick_ms / 1000)
    reply: Any = TICK.bind(
        stream=keys.stream(), run=keys.run(run_id), runs=keys.runs(), work=keys.work(), accepted=keys.accepted(),
        idem=keys.tick_idempotency("s", tick_ms), unsettled=keys.runs_unsettled(), lease=keys.scheduler_lease(),
        schedule=keys.schedule("s"),
        budget=budget, accepted_cap="", now=repr(msg.sent_at), run_id=run_id, topic=msg.topic, origin=msg.origin,
        idem_ttl=60, fingerprint=fingerprint(msg), fresh="0", lease_value=lease_value, tick_ms=tick_ms, token=token,
        run_prefix=keys.run(""), overlap=overlap, mode=mode, schedule_name="s", covers=1,
        fields=field_pairs(msg.to_fields()), events=keys.events(), outbox=keys.webhook_outbox(), outbox_cap=10,
        events_on=keys.events_on(),
    ).run(Link(r))
    return reply[0].decode(), reply[1].decode()


@pytest.fixture
def leader(r: redis.Redis, keys: Keys) -> None:
    assert acquire(r, keys, "a") == 1  # lease value "a 1"


@pytest.mark.usefixtures("leader")
def test_a_tick_sends_the_message_as_send_does_and_records_itself(r: redis.Redis, keys: Keys) -> None:
    outcome, entry = tick(r, keys, T, "run1")
    assert outcome == "sent"
    [(got, fields)] = r.xrange(keys.stream())
    assert got.decode() == entry and fields[b"t"] == b"beat" and fields[b"o"] == b"schedule:s"
    run = hash_as(r, keys.run("run1"), Run)
    assert (run["active"], run["origin"], run["schedule"], run["tick"], run["covers"]) == (
        "1", "schedule:s", "s", str(T), "1")
    st = h(r, keys.schedule("s"))
    assert (st["last"], st["token"], st["run"], st["entry"], st["sent"]) == (str(T), "1", "run1", entry, "1")


@pytest.mark.usefixtures("leader")
def test_the_same_tick_twice_is_sent_once(r: redis.Redis, keys: Keys) -> None:
    assert tick(r, keys, T, "run1")[0] == "sent"
    assert tick(r, keys, T, "run2") == ("stale", str(T))
    assert tick(r, keys, T - 1000, "run3") == ("stale", str(T))
    assert r.xlen(keys.stream()) == 1 and not r.exists(keys.run("run2"))


@pytest.mark.usefixtures("leader")
def test_a_tick_sent_before_is_not_sent_again_when_its_schedule_state_is_lost(r: redis.Redis, keys: Keys) -> None:
    _, entry = tick(r, keys, T, "run1")
    r.delete(keys.schedule("s"))  # e.g. restored from an older backup: the tick looks new to the fence
    assert tick(r, keys, T, "run2") == ("replayed", entry)
    assert r.xlen(keys.stream()) == 1 and not r.exists(keys.run("run2"))
    assert h(r, keys.schedule("s"))["last"] == str(T)  # recorded: the next tick is the next one
    assert tick(r, keys, T + 1000, "run3")[0] == "sent"


@pytest.mark.usefixtures("leader")
def test_a_tick_sent_before_is_replayed_not_skipped_over_the_work_budget(r: redis.Redis, keys: Keys) -> None:
    _, entry = tick(r, keys, T, "run1", budget=1)
    r.delete(keys.schedule("s"))
    assert tick(r, keys, T, "run2", budget=1) == ("replayed", entry)  # work 1 of 1, but nothing is sent
    assert "skipped" not in h(r, keys.schedule("s")) and r.get(keys.work()) == b"1"


@pytest.mark.usefixtures("leader")
def test_a_term_that_lost_the_lease_or_an_older_token_is_fenced(r: redis.Redis, keys: Keys) -> None:
    assert tick(r, keys, T, "run1", lease_value="b 2") == ("fenced", "")
    r.hset(keys.schedule("s"), "token", 5)  # a newer term recorded a tick before this one's lease came back
    assert tick(r, keys, T, "run1") == ("fenced", "")
    assert r.xlen(keys.stream()) == 0


@pytest.mark.usefixtures("leader")
def test_mark_records_the_tick_without_sending(r: redis.Redis, keys: Keys) -> None:
    assert tick(r, keys, T, "run1", mode="mark") == ("marked", "")
    assert h(r, keys.schedule("s")) == {"last": str(T), "token": "1"} and r.xlen(keys.stream()) == 0


@pytest.mark.usefixtures("leader")
def test_overlap_forbid_skips_while_the_last_run_is_active(r: redis.Redis, keys: Keys) -> None:
    assert tick(r, keys, T, "run1", overlap="forbid")[0] == "sent"
    assert tick(r, keys, T + 1000, "run2", overlap="forbid") == ("overlap", "run1")
    st = h(r, keys.schedule("s"))
    assert (st["last"], st["last_skipped"], st["skipped"], st["run"]) == (str(T + 1000), str(T + 1000), "1", "run1")
    assert st["skip_reason"] == "overlap run1"
    r.hset(keys.run("run1"), Run.active, 0)
    assert tick(r, keys, T + 2000, "run3", overlap="forbid")[0] == "sent"


@pytest.mark.usefixtures("leader")
def test_over_the_work_budget_a_tick_is_skipped_and_recorded_with_why(r: redis.Redis, keys: Keys) -> None:
    bus.send(r, keys, Message.create("t", None, "other"))
    assert tick(r, keys, T, "run1", budget=1) == ("budget", "BUDGET work 1 1")
    st = h(r, keys.schedule("s"))
    assert (st["last"], st["last_skipped"], st["skipped"]) == (str(T), str(T), "1")
    assert st["skip_reason"] == "BUDGET work 1 1"
    assert not r.exists(keys.run("run1")) and r.xlen(keys.stream()) == 1
    assert tick(r, keys, T, "run1", budget=2) == ("stale", str(T))  # skipped is done with: not sent later
    assert tick(r, keys, T + 1000, "run2", budget=2)[0] == "sent"


def test_a_message_the_stream_cannot_take_is_not_accepted_and_counts_nothing(r: redis.Redis, keys: Keys) -> None:
    r.set(keys.stream(), "not a stream")  # corrupted data
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        bus.send(r, keys, Message.create("data.ready", None, "run1", origin="http"))
    assert r.get(keys.work()) == b"0" and r.get(keys.accepted()) == b"0" and not r.exists(keys.run("run1"))


def test_an_accepted_message_is_answered_as_accepted_past_a_corrupted_run(r: redis.Redis, keys: Keys) -> None:
    """Once on the stream a message is accepted: an error answered then would be sent again by its client."""
    r.set(keys.run("run1"), "not a hash")
    entry = bus.send(r, keys, Message.create("data.ready", None, "run1", origin="http"))
    [(got, _)] = r.xrange(keys.stream())
    assert got.decode() == entry and r.get(keys.work()) == b"1" and r.hexists(keys.runs_unsettled(), "run1")
