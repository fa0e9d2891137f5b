"""The worker's wake-ups on a real redis-server: its loop hears bells and control requests itself (one BLPOP in
flight on a connection of its own, read from the loop's selector), and survives that connection being dropped."""
from __future__ import annotations

import selectors
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.processes.waker import Waker
from angora_rq.processes.worker import AngoraWorker

HANG = 30.0  # seconds: a guard against a test hanging, not a limit on speed


@pytest.fixture
def waker(r: redis.Redis, keys: Keys) -> Iterator[Waker]:
    w = Waker(r, keys, "w1", ["default"], selectors.DefaultSelector())
    yield w
    w.stop()


def _woken(w: Waker) -> list[object]:
    """What the selector reported (the waker's own registrations), waiting at most HANG."""
    return [key.data for key, _ in w._sel.select(HANG)]


def test_a_bell_wakes_a_waker_that_wants_work_and_is_taken(r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.arm(want_work=True)
    r.lpush(keys.bell("default"), "1")
    assert _woken(waker) == [waker]
    assert waker.answer() is True
    assert r.llen(keys.bell("default")) == 0
    assert not waker.control


def test_a_full_worker_leaves_the_bells_to_others_and_still_hears_control(
        r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.arm(want_work=False)
    r.lpush(keys.bell("default"), "1")  # first: a BLPOP over the bells would have taken it
    r.rpush(keys.worker_control("w1"), "kill x1")
    assert _woken(waker) == [waker]
    assert waker.answer() is True
    assert list(waker.control) == ["kill x1"]
    assert r.llen(keys.bell("default")) == 1


def test_one_blpop_at_a_time_and_a_pipe_wake_up(r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.arm(want_work=True)
    waker.arm(want_work=True)  # in flight already: nothing more is sent
    blpops = [c for c in r.client_list() if c["cmd"] == "blpop"]
    assert len(blpops) == 1
    waker.wake()
    assert _woken(waker) == [None]
    waker.drain()
    r.lpush(keys.bell("default"), "1")
    assert _woken(waker) == [waker] and waker.answer()


def test_a_dropped_connection_is_read_as_nothing_and_the_next_blpop_goes_out_on_a_new_one(
        r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.arm(want_work=True)
    blpop = next(c for c in r.client_list() if c["cmd"] == "blpop")
    r.client_kill_filter(_id=blpop["id"])
    assert _woken(waker) == [waker]
    assert waker.answer() is False  # the connection's end: nothing arrived
    waker.arm(want_work=True)  # within RETRY of the failure: not sent yet
    assert not [c for c in r.client_list() if c["cmd"] == "blpop"]
    waker._retry_at = 0.0
    waker.arm(want_work=True)
    assert [c for c in r.client_list() if c["cmd"] == "blpop"]
    r.lpush(keys.bell("default"), "1")
    assert _woken(waker) == [waker] and waker.answer() is True


def test_an_idle_worker_waiting_for_an_hour_is_woken_by_a_bell(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """The loop's wait ends on the bell itself: no heartbeat or claim poll is due for an hour."""
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data", worker_ttl=7200)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        waited = threading.Thread(target=worker._wait, args=(3600.0, True), daemon=True)
        waited.start()
        deadline = time.monotonic() + HANG
        while not [c for c in r.client_list() if c["cmd"] == "blpop"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r.lpush(keys.bell("default"), "1")
        waited.join(HANG)
        assert not waited.is_alive()
        assert r.llen(keys.bell("default")) == 0
    finally:
        worker.close()
