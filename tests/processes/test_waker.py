"""The worker's wake-ups on a real redis-server: its waker thread hears bells only while the loop wants work,
always hears control requests, and outlives a dropped connection."""
from __future__ import annotations

import selectors
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

import angora_rq.processes.waker as waker_module
import angora_rq.processes.worker as worker_module
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.schema import Exec
from angora_rq.core.settings import Settings
from angora_rq.processes.waker import Waker
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.state import State

HANG = 30.0  # seconds: a guard against a test hanging, not a limit on speed
JOB = JobDef("nap", ("go",), ("sleep", "0.2"), replay=0)


def _until(what: Callable[[], object], why: str) -> None:
    deadline = time.monotonic() + HANG
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.01)


def _blpops(r: redis.Redis) -> list[dict]:
    return [c for c in r.client_list() if c["cmd"] == "blpop"]


@pytest.fixture
def untimed(redis_url: str) -> Iterator[redis.Redis]:
    """A client whose reads wait for hours: a BLPOP of BLOCK seconds returns only after them (redis-py's socket
    timeout, 5 s when none is given, would end it sooner, and the waker would send another)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=7200)
    yield client
    client.close()


@pytest.fixture
def waker(untimed: redis.Redis, keys: Keys) -> Iterator[Waker]:
    w = Waker(untimed, keys, "w1", ["default"])
    yield w
    w.stop()


def _woken(w: Waker) -> bool:
    """Whether the pipe the loop's selector watches became readable (waiting at most HANG)."""
    with selectors.DefaultSelector() as sel:
        sel.register(w.fileno(), selectors.EVENT_READ)
        return bool(sel.select(HANG))


def _ring_and_be_woken(r: redis.Redis, keys: Keys, waker: Waker) -> None:
    """Ring the queue's bell: the waker wakes the loop and takes the bell; no request comes with it."""
    r.lpush(keys.bell("default"), "1")
    assert _woken(waker)
    waker.drain()
    assert r.llen(keys.bell("default")) == 0
    assert not waker.control


def test_a_bell_wakes_a_loop_that_wants_work_and_is_taken(r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.want(True, time.monotonic())
    waker.start()
    _until(lambda: _blpops(r), "the waker's BLPOP")
    _ring_and_be_woken(r, keys, waker)


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


def test_a_bell_taken_once_the_loop_no_longer_wants_work_is_put_back(
        r: redis.Redis, keys: Keys, waker: Waker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The BLPOP over the bells was sent while the loop wanted work; a claim filled its slots before the bell came:
    the bell goes back on its list for another worker, and the loop is not woken for it."""
    monkeypatch.setattr(waker_module, "BLOCK", 3600)
    waker.want(True, time.monotonic())
    waker.start()
    _until(lambda: _blpops(r), "the waker's BLPOP over the bells")
    waker.want(False, time.monotonic(), free=False)  # full now: the BLPOP in flight still watches the bells
    r.lpush(keys.bell("default"), "1")
    _until(lambda: r.llen(keys.bell("default")) == 1 and _blpops(r), "the bell put back")
    r.rpush(keys.worker_control("w1"), "kill x3")  # the next wake-up is this request's, not the bell's
    assert _woken(waker)
    assert list(waker.control) == ["kill x3"] and r.llen(keys.bell("default")) == 1


def test_the_waker_outlives_its_connection_being_dropped(r: redis.Redis, keys: Keys, waker: Waker) -> None:
    waker.start()
    _until(lambda: _blpops(r), "the waker's BLPOP")
    first = _blpops(r)[0]["id"]
    r.client_kill_filter(_id=first)
    _until(lambda: [c for c in _blpops(r) if c["id"] != first], "a BLPOP on a new connection")
    r.rpush(keys.worker_control("w1"), "kill x2")
    _until(lambda: waker.control, "the control request")
    assert list(waker.control) == ["kill x2"]


def test_a_blpop_sent_while_full_ends_soon_so_the_next_hears_the_bells(
        r: redis.Redis, keys: Keys, waker: Waker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BLPOP sent while the loop had no free slot watches the control list alone, for FULL_BLOCK: once the loop
    wants work, the next one hears the bells (with BLOCK an hour long, nothing else would end the first)."""
    monkeypatch.setattr(waker_module, "BLOCK", 3600)
    waker.start()  # want_work clear
    _until(lambda: _blpops(r), "the waker's BLPOP")
    waker.want(True, time.monotonic())
    _ring_and_be_woken(r, keys, waker)


def test_a_long_blpop_without_the_bells_ends_once_the_loop_wants_work(
        r: redis.Redis, keys: Keys, waker: Waker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker full of long commands sends BLPOPs over the control list alone, BLOCK long: once the loop wants work,
    it pokes the one in flight, and the next hears the bells (with BLOCK an hour long, nothing else would end it)."""
    monkeypatch.setattr(waker_module, "BLOCK", 3600)
    monkeypatch.setattr(waker_module, "DEAF_FOR", 0.0)  # nothing started or ended lately: BLOCK-long BLPOPs
    waker.start()  # want_work clear
    _until(lambda: waker.deaf.is_set() and _blpops(r), "the waker's long BLPOP without the bells")
    waker.want(True, time.monotonic() - 1)
    _ring_and_be_woken(r, keys, waker)
    assert r.llen(keys.worker_control("w1")) == 0  # the poke was taken, and dropped
    waker.want(True, time.monotonic() - 1)  # wanting still: no BLPOP in flight is deaf, nothing to poke
    assert r.llen(keys.worker_control("w1")) == 0


def test_a_worker_that_drained_after_being_full_hears_the_next_bell(
        r: redis.Redis, untimed: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's loop, full while its waker's BLPOP was sent, then free: its wait ends on the next bell (with
    BLOCK and the heartbeat an hour or more away, nothing else would end it)."""
    state, worker = _started_worker(untimed, keys, tmp_path, monkeypatch, concurrency=1)
    try:
        first = _create(r, state, "run1")
        _until(lambda: _step(worker) and r.hget(keys.execution(first), Exec.status) == b"succeeded", "the first")
        second = _woken_by_a_bell(r, keys, state, worker, monkeypatch)
        _until(lambda: _step(worker) and r.hget(keys.execution(second), Exec.status) == b"succeeded", "the second")
    finally:
        worker.close()


def _started_worker(client: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    concurrency: int) -> tuple[State, AngoraWorker]:
    """A started worker "w1" whose BLPOPs over the bells last an hour, and whose heartbeat is due in 24 minutes."""
    monkeypatch.setattr(waker_module, "BLOCK", 3600)
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data", worker_ttl=7200)
    worker = AngoraWorker(client, keys, settings, concurrency=concurrency, name="w1")
    worker.start()
    return State(keys, settings), worker


def _create(r: redis.Redis, state: State, run: str, job: JobDef = JOB) -> str:
    with r.pipeline() as pipe:
        xid = state.create(pipe, job, Message.create("go", None, run, origin="test"), time.time())
        pipe.execute()
    return xid


def _woken_by_a_bell(r: redis.Redis, keys: Keys, state: State, worker: AngoraWorker,
                     monkeypatch: pytest.MonkeyPatch) -> str:
    """A step that may wait an hour, in a thread; once it waits (past its claim), a new execution and its queue's
    bell, as a dispatch rings it: the step must end (waiting at most HANG). Returns the new execution's id."""
    waiting = threading.Event()
    wait = worker._wait

    def spied(timeout: float) -> None:
        waiting.set()
        wait(timeout)

    monkeypatch.setattr(worker, "_wait", spied)
    waited = threading.Thread(target=worker.step, kwargs={"max_wait": 3600.0}, daemon=True)
    waited.start()
    assert waiting.wait(HANG), "the step did not wait"
    xid = _create(r, state, "run2")
    r.lpush(keys.bell("default"), "1")
    waited.join(HANG)
    assert not waited.is_alive(), "the bell did not wake the worker"
    monkeypatch.setattr(worker, "_wait", wait)
    return xid


def _step(worker: AngoraWorker) -> bool:
    worker.step(max_wait=0.02)
    return True


def test_a_worker_long_full_hears_the_next_bell_once_its_slot_frees(
        r: redis.Redis, untimed: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One slot, held by a command longer than DEAF_FOR: the waker is in a BLOCK-long BLPOP over the control list
    when the command ends; the loop, free, must hear the next bell (BLOCK and the heartbeat an hour or more away)."""
    monkeypatch.setattr(waker_module, "DEAF_FOR", 0.05)
    state, worker = _started_worker(untimed, keys, tmp_path, monkeypatch, concurrency=1)
    gate = tmp_path / "gate"
    gated = JobDef("gated", ("go",), ("sh", "-c", f"while [ ! -e '{gate}' ]; do sleep 0.01; done"), replay=0)
    try:
        first = _create(r, state, "run1", gated)
        _until(lambda: _step(worker) and r.hget(keys.execution(first), Exec.status) == b"running", "the gated one")
        _until(lambda: _step(worker) and worker.waker.deaf.is_set(), "the waker's long BLPOP without the bells")
        gate.touch()
        _until(lambda: _step(worker) and r.hget(keys.execution(first), Exec.status) == b"succeeded", "the first")
        second = _woken_by_a_bell(r, keys, state, worker, monkeypatch)
        _until(lambda: _step(worker) and r.hget(keys.execution(second), Exec.status) == b"succeeded", "the second")
    finally:
        worker.close()


def test_a_busy_worker_with_a_free_slot_hears_the_bells_once_quiet(
        r: redis.Redis, untimed: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long command runs, a slot is free: once nothing has started or ended for QUIET, the waker hears the bells
    and the wait ends on one (the command runs for minutes, BLOCK and the heartbeat are an hour or more away)."""
    state, worker = _started_worker(untimed, keys, tmp_path, monkeypatch, concurrency=2)
    try:
        long = _create(r, state, "run1", JobDef("long", ("go",), ("sleep", "600"), replay=0))
        _until(lambda: _step(worker) and r.hget(keys.execution(long), Exec.status) == b"running", "the long one")
        time.sleep(worker_module.QUIET * 2)  # quiet now: nothing started or ended since
        _woken_by_a_bell(r, keys, state, worker, monkeypatch)
    finally:
        worker.request_stop()
        worker.request_stop()  # the second: now, the long command killed
        _until(lambda: _step(worker) and worker.done(), "the worker to stop")
        worker.close()


def test_blpops_without_the_bells_are_short_for_a_while_then_one_a_second() -> None:
    """Short while commands start and end (a burst, whose end the worker must hear soon after); a worker full of
    long commands sends one a second."""
    t = 1000.0
    assert waker_module.blpop_timeout(True, t, t + 100) == waker_module.BLOCK
    assert waker_module.blpop_timeout(False, t, t) == waker_module.FULL_BLOCK
    assert waker_module.blpop_timeout(False, t, t + waker_module.DEAF_FOR - 0.01) == waker_module.FULL_BLOCK
    assert waker_module.blpop_timeout(False, t, t + waker_module.DEAF_FOR) == waker_module.BLOCK
    assert waker_module.FULL_BLOCK < waker_module.BLOCK
