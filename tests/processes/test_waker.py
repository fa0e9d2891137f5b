"""The worker's wake-ups on a real redis-server: its waker thread hears bells only while the loop wants work,
always hears control requests, and outlives a dropped connection."""
from __future__ import annotations

import selectors
import time
from typing import Callable, Iterator

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.processes.waker import Waker

HANG = 30.0  # seconds: a guard against a test hanging, not a limit on speed


def _until(what: Callable[[], object], why: str) -> None:
    deadline = time.monotonic() + HANG
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.01)


def _blpops(r: redis.Redis) -> list[dict]:
    return [c for c in r.client_list() if c["cmd"] == "blpop"]


@pytest.fixture
def waker(r: redis.Redis, keys: Keys) -> Iterator[Waker]:
    w = Waker(r, keys, "w1", ["default"])
    yield w
    w.stop()


def _woken(w: Waker) -> bool:
    """Whether the pipe the loop's selector watches became readable (waiting at most HANG)."""
    with selectors.DefaultSelector() as sel:
        sel.register(w.fileno(), selectors.EVENT_READ)
        return bool(sel.select(HANG))


def test_a_bell_wakes_a_loop_that_wants_work_and_is_taken(r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.want_work.set()
    waker.start()
    _until(lambda: _blpops(r), "the waker's BLPOP")
    r.lpush(keys.bell("default"), "1")
    assert _woken(waker)
    waker.drain()
    assert r.llen(keys.bell("default")) == 0
    assert not waker.control


def test_a_full_worker_leaves_the_bells_to_others_and_still_hears_control(
        r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.start()  # want_work clear: the loop has no free slot
    _until(lambda: _blpops(r), "the waker's BLPOP")
    r.lpush(keys.bell("default"), "1")  # first: a BLPOP over the bells would take it
    r.rpush(keys.worker_control("w1"), "kill x1")
    assert _woken(waker)
    _until(lambda: waker.control, "the control request")
    assert list(waker.control) == ["kill x1"]
    assert r.llen(keys.bell("default")) == 1


def test_the_waker_outlives_its_connection_being_dropped(r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.start()
    _until(lambda: _blpops(r), "the waker's BLPOP")
    first = _blpops(r)[0]["id"]
    r.client_kill_filter(_id=first)
    _until(lambda: [c for c in _blpops(r) if c["id"] != first], "a BLPOP on a new connection")
    r.rpush(keys.worker_control("w1"), "kill x2")
    _until(lambda: waker.control, "the control request")
    assert list(waker.control) == ["kill x2"]
