"""Reads of one process share the settle that filtered run lists make first (store/runindex.py), on a real Redis:
concurrent reads make one settle, and with many runs in flight a second-old result serves; otherwise each read
settles."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import redis

import angora_rq.store.runindex as runindex
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Run, Status
from angora_rq.store.runindex import RunIndex, Window


def _runs(r: redis.Redis, keys: Keys, n: int, active: int, prefix: str = "live") -> None:
    """n runs of one job, in flight (active 1) or succeeded (active 0), all waiting to be settled."""
    now = time.time()
    with r.pipeline(transaction=False) as p:
        for i in range(n):
            rid = f"{prefix}{i}"
            p.hset(keys.run(rid), mapping={Run.created: now - i, Run.topic: "t", Run.origin: "test",
                                           Run.active: active,
                                           Run.job_status + "j": Status.queued if active else Status.succeeded})
            p.zadd(keys.runs(), {rid: now - i})
            p.hincrby(keys.runs_unsettled(), rid, 1)
        p.set(keys.runs_index_built(), 1)
        p.execute()


def _succeeded(index: RunIndex) -> int:
    return index.page(Window(), Status.succeeded, None)[0]


class Clock:
    """runindex's clock (time.monotonic), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(runindex, "monotonic", c)
    return c


def _counting(index: RunIndex, monkeypatch: pytest.MonkeyPatch,
              before: Callable[[int], None] = lambda n: None) -> list[int]:
    """The index's settle_part calls, counted; `before(n)` runs first in the n-th."""
    calls: list[int] = []
    real: Callable[..., Any] = index.settle_part

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        before(len(calls))
        return real(*args, **kwargs)

    monkeypatch.setattr(index, "settle_part", counted)
    return calls


def _index(r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch, live: int,
           share_from: int = 0) -> tuple[RunIndex, list[int]]:
    """`live` runs in flight; an index whose settles are counted (shared from `share_from` live runs, if given)."""
    if share_from:
        monkeypatch.setattr(runindex, "SHARE_FROM", share_from)
    _runs(r, keys, live, active=1)
    index = RunIndex(r, keys)
    return index, _counting(index, monkeypatch)


def test_with_many_runs_in_flight_reads_within_a_second_share_one_settle(
        r: redis.Redis, keys: Keys, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    index, calls = _index(r, keys, monkeypatch, 5, share_from=5)
    assert _succeeded(index) == 0 and len(calls) == 1
    _runs(r, keys, 1, active=0, prefix="done")
    clock.now += runindex.SHARE_FOR / 2
    assert _succeeded(index) == 0 and len(calls) == 1  # the last settle's result: the finished run waits
    assert len(index.settle()) == 5
    clock.now += runindex.SHARE_FOR
    assert _succeeded(index) == 1 and len(calls) == 2


def test_with_few_runs_in_flight_every_read_settles(
        r: redis.Redis, keys: Keys, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    index, calls = _index(r, keys, monkeypatch, 5)  # below SHARE_FROM
    assert _succeeded(index) == 0
    _runs(r, keys, 1, active=0, prefix="done")
    assert _succeeded(index) == 1 and len(calls) == 2  # no time passed, and still read afresh


def test_a_settle_with_statuses_serves_one_without_but_not_the_other_way(
        r: redis.Redis, keys: Keys, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    index, calls = _index(r, keys, monkeypatch, 5, share_from=5)
    index.settle(statuses=False)
    assert [run.status for run in index.settle(statuses=True)] == [Status.queued] * 5 and len(calls) == 2
    assert len(index.settle(statuses=False)) == 5 and len(calls) == 2


def test_reads_at_once_make_one_settle_after_the_one_under_way(
        r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that comes while a settle is under way cannot take it (it may have read before the read came), but
    the first settle after it serves every read waiting with it: 8 reads, two settles, whatever their order."""
    _runs(r, keys, 3, active=1)  # few runs: no sharing by age
    index = RunIndex(r, keys)
    entered, go = threading.Event(), threading.Event()

    def hold_the_first(n: int) -> None:
        if n == 1:
            entered.set()
            assert go.wait(60)

    calls = _counting(index, monkeypatch, before=hold_the_first)
    arrivals = [0]
    lock = threading.Lock()
    real_monotonic = time.monotonic

    def counted_monotonic() -> float:
        with lock:
            arrivals[0] += 1
        return real_monotonic()

    monkeypatch.setattr(runindex, "monotonic", counted_monotonic)
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(len(index.settle())))
    first.start()
    assert entered.wait(60)
    others = [threading.Thread(target=lambda: results.append(len(index.settle()))) for _ in range(7)]
    for t in others:
        t.start()
    deadline = real_monotonic() + 60
    while arrivals[0] < 2 + 7:  # the first read's arrival and start, then each other read's arrival
        assert real_monotonic() < deadline, arrivals
        time.sleep(0.001)
    go.set()
    for t in [first, *others]:
        t.join(60)
    assert results == [3] * 8 and len(calls) == 2
