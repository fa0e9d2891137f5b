"""The web's group commit of sends to the stream (store/sendbatch.py): batches form only while a call is in flight,
each message keeps its own answer or refusal, and a waiting request holds no Redis connection (the real
redis-server, through bus.answer_all)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Union

import pytest
import redis

from angora_rq.core.errors import Conflict, Overloaded
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.pressure import NO_BUDGET, Budget
from angora_rq.core.schema import Metrics
from angora_rq.store import bus
from angora_rq.store.link import release_link
from angora_rq.store.scripts import Bound
from angora_rq.store.sendbatch import CROWD, Coalescer, SendBatcher


class Gate:
    """A flush that records its batches; the first one waits until `open` (so that others queue meanwhile)."""

    def __init__(self, outcome: Callable[[int], Union[int, BaseException]] = lambda x: x * 10) -> None:
        self.batches: list[list[int]] = []
        self.entered, self.open = threading.Event(), threading.Event()
        self.outcome = outcome

    def __call__(self, items: list[int]) -> list[Union[int, BaseException]]:
        self.batches.append(list(items))
        self.entered.set()
        self.open.wait(30)
        return [self.outcome(x) for x in items]


def run_all(c: Coalescer[int, int], items: list[int]) -> dict[int, Any]:
    """Submit each item from a thread of its own; each one's result or exception."""
    out: dict[int, Any] = {}

    def one(x: int) -> None:
        try:
            out[x] = c.submit(x)
        except BaseException as e:
            out[x] = e
    joined([threading.Thread(target=one, args=(x,)) for x in items], start=True)
    return out


def joined(threads: list[threading.Thread], start: bool = False) -> None:
    for t in threads:
        if start:
            t.start()
    for t in threads:
        t.join(30)


def queued(c: Coalescer[Any, Any], n: int) -> None:
    deadline = time.monotonic() + 30  # a bound against hangs
    while len(c._queue) < n:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def behind_a_held_flush(c: Coalescer[int, int], gate: Gate, items: list[int]) -> dict[int, Any]:
    """Submit 0 (its flush held at the gate), then each of `items` from a thread of its own while that flush is in
    flight; open the gate once they are all queued. Each item's outcome."""
    first = threading.Thread(target=c.submit, args=(0,))
    first.start()
    assert gate.entered.wait(30)
    out: dict[int, Any] = {}
    threads = [threading.Thread(target=lambda x=x: out.__setitem__(x, c.submit(x))) for x in items]
    for t in threads:
        t.start()
    queued(c, len(items))
    gate.open.set()
    first.join(30)
    joined(threads)
    return out


def test_a_lone_submit_goes_at_once_alone() -> None:
    gate = Gate()
    gate.open.set()
    c: Coalescer[int, int] = Coalescer(gate)
    assert c.submit(1) == 10 and c.submit(2) == 20
    assert gate.batches == [[1], [2]]


def test_submits_made_while_a_flush_is_in_flight_go_together_in_the_next() -> None:
    gate = Gate()
    c: Coalescer[int, int] = Coalescer(gate)
    out = behind_a_held_flush(c, gate, [1, 2, 3, 4, 5])
    assert gate.batches[0] == [0] and sorted(gate.batches[1]) == [1, 2, 3, 4, 5] and len(gate.batches) == 2
    assert out == {x: x * 10 for x in range(1, 6)}


def test_each_caller_gets_its_own_refusal_and_a_failed_flush_fails_its_whole_batch() -> None:
    gate = Gate(lambda x: ValueError(f"no {x}") if x % 2 else x)
    gate.open.set()
    c: Coalescer[int, int] = Coalescer(gate)
    with pytest.raises(ValueError, match="no 3"):
        c.submit(3)
    assert c.submit(4) == 4

    def broken(items: list[int]) -> list[int]:
        raise ConnectionError("down")
    out = run_all(Coalescer(broken), [1, 2, 3])
    assert all(isinstance(e, ConnectionError) for e in out.values()) and len(out) == 3


def test_a_batch_is_at_most_cap_items() -> None:
    gate = Gate()
    c: Coalescer[int, int] = Coalescer(gate, cap=2)
    behind_a_held_flush(c, gate, [1, 2, 3, 4, 5])
    assert [len(b) for b in gate.batches] == [1, 2, 2, 1]


# -- SEND calls in one round trip (real Redis) -----------------------------------------------------------------

def calls(keys: Keys, msgs: list[Message], budget: Budget = NO_BUDGET, key: Callable[[int], str] = lambda i: "") \
        -> list[Bound]:
    return [bus.send_call(keys, m, budget, key(i), 60, "") for i, m in enumerate(msgs)]


def reads(r: redis.Redis) -> int:
    """How many reads of a client's socket the server has done (its INFO's own included)."""
    return int(r.info("stats")["total_reads_processed"])


def test_sends_in_one_round_trip_are_each_accepted_as_alone(r: redis.Redis, keys: Keys) -> None:
    msgs = [Message.create("t", {"i": str(i)}, None, origin="http") for i in range(5)]
    first = bus.answer_all(r, keys, msgs[:1], calls(keys, msgs[:1]), NO_BUDGET, None)  # (the Link's handshake)
    before = reads(r)
    got = first + bus.answer_all(r, keys, msgs[1:], calls(keys, msgs[1:]), NO_BUDGET, None)
    assert reads(r) - before == 2  # four SENDs in one read, then this INFO's
    entries = {e.decode(): f for e, f in r.xrange(keys.stream())}
    assert [s.run_id for s in got] == [m.run_id for m in msgs]  # type: ignore[union-attr]
    assert [entries[s.message_id][b"r"].decode() for s in got] == [m.run_id for m in msgs]  # type: ignore[union-attr]
    assert int(r.get(keys.work())) == 5 and r.zcard(keys.runs()) == 5


def test_a_refusal_or_a_repeat_in_a_batch_is_that_message_alone(r: redis.Redis, keys: Keys) -> None:
    msgs = [Message.create("t", None, None) for _ in range(4)]
    got = bus.answer_all(r, keys, msgs, calls(keys, msgs, Budget(work=2)), Budget(work=2), None)
    assert [type(x) for x in got] == [bus.Sent, bus.Sent, Overloaded, Overloaded]
    assert r.hget(keys.metrics(), Metrics.refused + "backlog") == b"2"  # counted for /metrics, once per batch
    r.delete(keys.work())
    same = [Message.create("t", None, None), Message.create("t", None, None), Message.create("u", None, None)]
    got = bus.answer_all(r, keys, same, calls(keys, same, key=lambda i: "k1"), NO_BUDGET, None)
    first, repeat, reused = got
    assert isinstance(first, bus.Sent) and isinstance(repeat, bus.Sent) and isinstance(reused, Conflict)
    assert repeat.replayed and (repeat.run_id, repeat.message_id) == (first.run_id, first.message_id)


def test_a_batch_after_redis_lost_its_scripts_loads_them_and_runs_each_once(r: redis.Redis, keys: Keys) -> None:
    r.script_flush()
    msgs = [Message.create("t", None, None) for _ in range(3)]
    got = bus.answer_all(r, keys, msgs, calls(keys, msgs), NO_BUDGET, None)
    assert all(isinstance(s, bus.Sent) for s in got) and r.xlen(keys.stream()) == 3


def test_requests_waiting_for_a_batch_hold_no_connection(redis_url: str) -> None:
    """Eight requests at once on a web pool of two connections: the ones waiting for a batch hold none, so the
    leader always has one (a waiter holding one would leave the pool dry: 503 after its timeout)."""
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=2, timeout=5)
    client, keys = redis.Redis(connection_pool=pool), Keys("batch")
    batcher = SendBatcher(client, keys, lambda: NO_BUDGET, 60, None)
    client.get("a read first, as a request's auth check does")
    errors: list[BaseException] = []
    sent: list[bus.Sent] = []

    def request() -> None:
        try:
            sent.append(batcher.submit(Message.create("t", None, None, origin="http")))
        except BaseException as e:
            errors.append(e)
        finally:
            release_link(client)
    joined([threading.Thread(target=request) for _ in range(8)], start=True)
    assert not errors, errors
    assert len({s.run_id for s in sent}) == 8 and client.xlen(keys.stream()) == 8
    client.close()


def test_below_crowd_sends_go_alone_and_side_by_side(r: redis.Redis, keys: Keys) -> None:
    """Two sends in hand at once (CROWD is more) each make their own call, neither waiting for the other's: a
    batch would wait for the call in flight, and with 2 clients per web process that cost 10 % of jobs/s."""
    assert CROWD > 2
    batcher = SendBatcher(r, keys, lambda: NO_BUDGET, 60, None)
    both = threading.Barrier(2, timeout=30)
    flush = batcher._flush
    sizes: list[int] = []

    def side_by_side(batch: list[Any]) -> Any:
        sizes.append(len(batch))
        both.wait()  # broken (BrokenBarrierError) unless the other send is in its own call at the same time
        return flush(batch)
    batcher._flush = side_by_side  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def send() -> None:
        try:
            batcher.submit(Message.create("t", None, None))
        except BaseException as e:
            errors.append(e)
    joined([threading.Thread(target=send) for _ in range(2)], start=True)
    assert not errors and sizes == [1, 1] and r.xlen(keys.stream()) == 2
