"""A CLAIM that fails midway (a key of the wrong type: corrupted data) leaves nothing running without an owner and
loses nothing it popped; against the real redis-server (Redis keeps what a script wrote before its error)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
import redis

from angora_rq.core.keys import Keys, rq_job
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.processes.worker import AngoraWorker
from test_cancel import create, status
from test_pause import claim

JOB = JobDef("step", ("go",), ("true",), queue="q1", replay=0)


def queued(r: redis.Redis, keys: Keys) -> list[str]:
    return [x.decode() for x in r.lrange(keys.rq_queue("q1"), 0, -1)]


def inflight(r: redis.Redis, keys: Keys) -> list[str]:
    return [x.decode() for x in r.lrange(keys.worker_inflight("w1"), 0, -1)]


def corrupt(r: redis.Redis, key: str) -> None:
    r.delete(key)
    r.set(key, "not a hash")


def test_what_a_failed_claim_marked_running_is_in_inflight_and_the_rest_back_in_the_queue(
        r: redis.Redis, keys: Keys) -> None:
    a, b, c = (create(r, keys, JOB, f"r{i}") for i in range(3))
    corrupt(r, keys.run("r1"))  # b's run: CLAIM fails after marking b running
    with pytest.raises(redis.ResponseError, match=f"^WRONGTYPE .*CLAIM stopped at execution {b} of queue q1"):
        claim(r, keys, ("q1",), n=3)
    assert (status(r, keys, a), status(r, keys, b), status(r, keys, c)) == ("running", "running", "queued")
    assert inflight(r, keys) == [a, b]  # owned by the worker, which finds them there (as after a lost reply)
    assert queued(r, keys) == [c]  # popped, not looked at: back at the head
    assert r.zcard(keys.rq_started("q1")) == 2  # both in RQ's started registry too


def test_an_execution_that_cannot_be_read_goes_to_the_tail_and_nothing_is_lost(r: redis.Redis, keys: Keys) -> None:
    a, b, c, d = (create(r, keys, JOB, f"r{i}") for i in range(4))
    corrupt(r, keys.execution(b))  # its HMGET fails: nothing marked for it
    with pytest.raises(redis.ResponseError, match=f"CLAIM stopped at execution {b} "):
        claim(r, keys, ("q1",), n=3)
    assert inflight(r, keys) == [a] and status(r, keys, a) == "running"
    assert queued(r, keys) == [c, d, b]  # c (popped with it) back at the head, in order; b after the others
    assert claim(r, keys, ("q1",), n=2) == [c, d]  # the others are not held up behind it
    with pytest.raises(redis.ResponseError, match=f"execution {b} "):
        claim(r, keys, ("q1",), n=2)
    assert queued(r, keys) == [b] and inflight(r, keys) == [a, c, d]


def test_a_held_execution_is_in_its_held_list_before_anything_else_is_written(r: redis.Redis, keys: Keys) -> None:
    limited = JobDef("one_at_a_time", ("go",), ("true",), queue="q1", replay=0, concurrency=1)
    first, second = (create(r, keys, limited, f"r{i}") for i in range(2))
    corrupt(r, keys.run("r1"))  # the second one's run: the claim fails as it is held (after its held list)
    with pytest.raises(redis.ResponseError, match=f"execution {second} "):
        claim(r, keys, ("q1",), n=2)
    assert status(r, keys, first) == "running" and inflight(r, keys) == [first]
    assert status(r, keys, second) == "held" and r.lrange(keys.held("one_at_a_time"), 0, -1) == [second.encode()]
    assert queued(r, keys) == []


def step_through_errors(worker: AngoraWorker, done: Callable[[], bool], errors: list[str],
                        timeout: float = 30) -> None:
    """Step the worker as its run() loop does: a step that fails is logged there and the loop goes on."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        try:
            worker.step(max_wait=0.05)
        except redis.ResponseError as e:
            errors.append(str(e))


def test_a_worker_runs_what_its_failed_claim_marked_running(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    a, b, c = (create(r, keys, JOB, f"r{i}") for i in range(3))
    corrupt(r, rq_job(b))  # b's RQ job: the claim fails after marking b running (its end deletes the key)
    worker = AngoraWorker(r, keys, settings, concurrency=3, name="w1", queues=("q1",))
    worker.start()
    errors: list[str] = []
    try:
        step_through_errors(worker, lambda: all(status(r, keys, x) == "succeeded" for x in (a, b, c)), errors)
    finally:
        worker.close()
    assert len(errors) == 1 and f"execution {b} " in errors[0]
    assert inflight(r, keys) == [] and queued(r, keys) == []
