"""The janitors' settle of the run indexes on a real redis-server: one janitor at a time, a bounded part per step."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import redis

import angora_rq.processes.janitor as janitor_module
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.processes.janitor import SETTLE_DUTY, SETTLE_STEP_EVERY, SETTLE_STEP_SOON, Janitor, next_gap
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.runindex import RunIndex

RUNS = 1200  # unsettled runs: past hash-max-ziplist-entries (512 here) the hash is a hashtable, scanned in parts


def _unsettled(r: redis.Redis, keys: Keys, n: int = RUNS) -> None:
    """`n` unsettled runs whose hashes are gone (trimmed): a settle just takes them out of `unsettled`."""
    r.hset(keys.runs_unsettled(), mapping={f"run{i}": 1 for i in range(n)})
    r.set(keys.runs_index_built(), 1)


def test_a_settle_part_reads_about_as_many_runs_as_asked_and_says_where_to_go_on(
        r: redis.Redis, keys: Keys) -> None:
    _unsettled(r, keys)
    index = RunIndex(r, keys, chunk=50)
    cursor, _ = index.settle_part(0, 50)
    left = r.hlen(keys.runs_unsettled())
    assert cursor != 0 and 0 < left <= RUNS - 50
    parts = 1
    while cursor:
        cursor, _ = index.settle_part(cursor, 50)
        parts += 1
    assert r.hlen(keys.runs_unsettled()) == 0 and parts > 2


def test_one_janitor_settles_at_a_time_and_goes_on_over_its_next_steps(
        r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two janitors step together: the first takes the settle's lease and reads a part, the second reads nothing;
    the first's next steps finish the pass without asking for the lease again."""
    monkeypatch.setattr(janitor_module, "SETTLE_STEP", 50)
    monkeypatch.setattr(janitor_module, "SETTLE_CHUNK", 50)
    _unsettled(r, keys)
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path)
    first, second = Janitor(r, keys, settings), Janitor(r, keys, settings)
    now = time.time()
    first.settle(now)
    after_first = r.hlen(keys.runs_unsettled())
    assert 0 < after_first <= RUNS - 50 and r.exists(keys.runs_settler())
    second.settle(now)
    assert r.hlen(keys.runs_unsettled()) == after_first  # the lease is held: it read nothing
    left = r.hlen(keys.runs_unsettled())
    first.settle(now + janitor_module.SETTLE_STEP_EVERY / 2)  # the next step is not due yet
    assert r.hlen(keys.runs_unsettled()) == left
    steps = 1
    while r.hlen(keys.runs_unsettled()):
        first.settle(now + steps * janitor_module.SETTLE_STEP_EVERY)
        steps += 1
        assert steps < RUNS, "the pass does not end"
    assert steps > 2
    r.hset(keys.runs_unsettled(), "late", 1)
    first.settle(now + steps * janitor_module.SETTLE_STEP_EVERY)  # the pass is over: the next is SETTLE_EVERY after
    assert r.hlen(keys.runs_unsettled()) == 1  # the last one started (it started at `now`: not yet, if SETTLE_EVERY
    # is longer than this pass took)


def test_a_janitor_settles_again_once_the_lease_has_expired(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    _unsettled(r, keys, 3)
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path)
    janitor = Janitor(r, keys, settings)
    r.set(keys.runs_settler(), "another janitor", px=int(janitor_module.SETTLE_LEASE * 1000))
    now = time.time()
    janitor.settle(now)
    assert r.hlen(keys.runs_unsettled()) == 3
    r.delete(keys.runs_settler())  # expired
    janitor.settle(now + janitor_module.SETTLE_EVERY)
    assert r.hlen(keys.runs_unsettled()) == 0


def test_a_worker_steps_through_a_pass_every_second_between_its_heartbeats(
        r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ANGORA_WORKER_TTL at two hours a worker beats every 24 minutes; its loop still takes a pass's next step
    each second (it used to take one per heartbeat: 1,000 runs per 24 minutes)."""
    monkeypatch.setattr(janitor_module, "SETTLE_STEP", 100)
    monkeypatch.setattr(janitor_module, "SETTLE_CHUNK", 100)
    _unsettled(r, keys)
    worker = AngoraWorker(r, keys, Settings(prefix=keys.prefix, data_dir=tmp_path / "data", worker_ttl=7200),
                          concurrency=1, name="w1")
    worker.start()
    try:
        now = time.time()
        left = [r.hlen(keys.runs_unsettled())]
        for second in range(4):
            worker._housekeeping(now + second * janitor_module.SETTLE_STEP_EVERY)
            left.append(r.hlen(keys.runs_unsettled()))
        assert left[0] > left[1] > left[2] > left[3] > left[4], left
    finally:
        worker.close()


def test_a_pass_takes_its_share_of_the_loop_and_no_more() -> None:
    """The next step of a pass waits (1 - SETTLE_DUTY) / SETTLE_DUTY times what the last one took, within bounds."""
    assert next_gap(0.0) == SETTLE_STEP_SOON
    took = 0.05
    assert next_gap(took) == pytest.approx(took * (1 - SETTLE_DUTY) / SETTLE_DUTY)
    assert took / (took + next_gap(took)) == pytest.approx(SETTLE_DUTY)
    assert next_gap(10.0) == SETTLE_STEP_EVERY


@pytest.mark.parametrize("idle", [True, False], ids=["worker-idle", "worker-busy"])
def test_a_pass_over_a_backlog_steps_again_as_soon_as_its_share_allows_while_its_worker_is_idle(
        r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idle: bool) -> None:
    """A janitor whose worker runs nothing takes a pass's next step after next_gap() of the last step's time, not
    SETTLE_STEP_EVERY later (a second apart, one worker drained 14,790 runs in 15 s after a load); a busy worker's
    keeps a step a second, which costs its work less."""
    took: list[float] = []
    gap = 0.125  # exact in binary, as are whole seconds: now + gap - now == gap

    def timed(seconds: float) -> float:
        took.append(seconds)
        return gap

    monkeypatch.setattr(janitor_module, "next_gap", timed)
    monkeypatch.setattr(janitor_module, "SETTLE_STEP", 100)
    monkeypatch.setattr(janitor_module, "SETTLE_CHUNK", 100)
    _unsettled(r, keys)
    janitor = Janitor(r, keys, Settings(prefix=keys.prefix, data_dir=tmp_path))
    now = float(int(time.time()))
    janitor.settle(now, idle=idle)
    left = r.hlen(keys.runs_unsettled())
    assert 0 < left < RUNS
    assert janitor.next_settle() == now + (gap if idle else SETTLE_STEP_EVERY)  # what the worker's wait wakes for
    janitor.settle(now + gap / 2, idle=idle)
    assert r.hlen(keys.runs_unsettled()) == left  # not due yet
    janitor.settle(now + gap, idle=idle)
    if not idle:
        assert r.hlen(keys.runs_unsettled()) == left and not took  # a second apart, as before
        return
    assert r.hlen(keys.runs_unsettled()) < left and took and took[0] > 0  # due long before SETTLE_STEP_EVERY
    steps = 2
    while r.hlen(keys.runs_unsettled()):
        steps += 1
        janitor.settle(now + steps * gap, idle=True)
        assert steps < RUNS, "the pass does not end"
    assert steps * gap < 2 * SETTLE_STEP_EVERY  # 1,200 runs in ~12 steps of 100: within 2 s, not 12
    assert janitor.next_settle() is None  # the pass is over: nothing to wake for


@contextmanager
def idle_worker(r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                gap: float) -> Iterator[AngoraWorker]:
    """A started worker running nothing, over RUNS unsettled runs, whose settle steps come `gap` apart."""
    monkeypatch.setattr(janitor_module, "next_gap", lambda took: gap)
    monkeypatch.setattr(janitor_module, "SETTLE_STEP", 100)
    monkeypatch.setattr(janitor_module, "SETTLE_CHUNK", 100)
    _unsettled(r, keys)
    worker = AngoraWorker(r, keys, Settings(prefix=keys.prefix, data_dir=tmp_path / "data"), concurrency=1,
                          name="w1")
    worker.start()
    try:
        yield worker
    finally:
        worker.outage.reached()
        worker.close()


def test_an_idle_worker_waits_no_longer_than_its_pass_s_next_step(
        r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle worker's loop turns once a second; with a pass under way it wakes for the pass's next step."""
    with idle_worker(r, keys, tmp_path, monkeypatch, 0.125) as worker:
        now = time.time()
        worker._housekeeping(now)  # its heartbeat, and the janitor's pass starts (the worker runs nothing)
        assert worker.janitor.next_settle() is not None
        assert worker._wait_timeout(1.0, 0) <= 0.125
        steps = 0
        while worker.janitor.next_settle() is not None:
            steps += 1
            worker.janitor.settle(now + steps * 0.125, idle=True)
            assert steps < RUNS, "the pass does not end"
        assert worker._wait_timeout(1.0, 0) > 0.125  # no pass under way: until its next heartbeat, or a second


def test_an_idle_worker_does_not_spin_while_redis_is_out_of_reach(
        r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither a pass's next step nor the heartbeat can be written while Redis is out of reach: the wait is the
    outage's backoff, not 0 for what is overdue (the loop spun a core for as long as the outage lasted)."""
    with idle_worker(r, keys, tmp_path, monkeypatch, 0.0) as worker:  # every step due at once
        worker._housekeeping(time.time())  # its heartbeat, and the pass starts
        assert worker.janitor.next_settle() is not None and worker._wait_timeout(1.0, 0) == 0.0  # due now
        worker._lost(redis.ConnectionError("Redis restarting"))
        assert worker.outage.down
        assert worker._wait_timeout(1.0, 0) > 0.0  # the outage's backoff, not the overdue step
        worker._last_beat = 0.0  # its heartbeat overdue too, as the outage goes on
        assert worker._wait_timeout(1.0, 0) > 0.0
