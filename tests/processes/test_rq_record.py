"""RQ's record of Angora's workers (store/rqworker.py), written without rq and read back with rq's own API; and the
worker process never imports rq (its package costs the idle worker about 1.3 MiB of RSS)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.worker import BaseWorker
from rq.version import VERSION

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.schema import Exec, RqWorker
from angora_rq.core.settings import Settings
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.state import State


def _names(workers: list[BaseWorker]) -> set[str]:
    return {w.name for w in workers}


def test_rq_lists_the_worker_while_it_lives_and_not_after(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    worker = AngoraWorker(r, keys, settings, queues=("default", "etl"), concurrency=1, name="w1")
    rq_names = [keys.rq_name("default"), keys.rq_name("etl")]
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    pool_options = dict(r.connection_pool.connection_kwargs)
    worker.start()
    try:
        # rq's Worker raises its client's socket_timeout to 415 s: a partition would hang the worker's reads as long
        assert r.connection_pool.connection_kwargs == pool_options
        assert _names(Worker.all(connection=r)) == {"w1"}  # (from here on rq raises it, reading with its Worker)
        for q in rq_names:
            assert _names(Worker.all(queue=Queue(q, connection=r))) == {"w1"}
        w = Worker.find_by_key(K.rq_worker("w1"), connection=r)
        assert w is not None
        assert w.get_state() == "idle" and w.queue_names() == rq_names
        assert (w.hostname, w.pid) == (socket.gethostname(), os.getpid())
        assert w.birth_date is not None and before <= w.birth_date <= datetime.now(timezone.utc)
        assert w.ip_address and w.ip_address != "unknown"
        assert r.hget(K.rq_worker("w1"), RqWorker.version) == VERSION.encode()
        assert r.hget(K.rq_worker("w1"), RqWorker.python_version) == sys.version.encode()
        assert 0 < r.ttl(K.rq_worker("w1")) <= int(settings.worker_ttl) + 60
    finally:
        worker.close()
    assert Worker.all(connection=r) == []
    assert all(Worker.all(queue=Queue(q, connection=r)) == [] for q in rq_names)
    assert r.hget(K.rq_worker("w1"), RqWorker.death)
    assert 0 < r.ttl(K.rq_worker("w1")) <= 60


def test_the_record_has_the_fields_and_sets_rq_writes(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """Field for field what rq's own register_birth and register_death write (Angora adds the state at birth)."""
    queue = keys.rq_name("default")
    stock = Worker([Queue(queue, connection=r)], connection=r, name="stock")
    stock.register_birth()
    ours = AngoraWorker(r, keys, Settings(prefix=keys.prefix, data_dir=tmp_path / "data"), name="ours")
    ours.start()
    try:
        assert set(r.hkeys(K.rq_worker("ours"))) == set(r.hkeys(K.rq_worker("stock"))) | {b"state"}
        assert r.smembers(K.RQ_WORKERS) == r.smembers(K.rq_queue_workers(queue)) == {
            K.rq_worker("ours").encode(), K.rq_worker("stock").encode()}
    finally:
        ours.close()
    stock.register_death()
    assert set(r.hkeys(K.rq_worker("ours"))) == set(r.hkeys(K.rq_worker("stock"))) | {b"state"}
    assert not r.exists(K.RQ_WORKERS, K.rq_queue_workers(queue))


def test_the_worker_process_never_imports_rq(r: redis.Redis, keys: Keys, angora_env: dict[str, str],
                                              angora_exe: list[str], tmp_path: Path) -> None:
    """`angora worker` from start to exit, one command run on the way: no module of rq's package is imported."""
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    with r.pipeline() as pipe:
        xid = State(keys, settings).create(pipe, JobDef("ok", ("go",), ("true",), replay=0),
                                           Message.create("go", None, "run1", origin="test"), time.time())
        pipe.execute()
    argv = [angora_exe[0], "-X", "importtime", *angora_exe[1:], "worker", "--burst", "--name", "w1"]
    out = subprocess.run(argv, env=angora_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert r.hget(keys.execution(xid), Exec.status) == b"succeeded"
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert [m for m in imported if m == "rq" or m.startswith("rq.")] == []
    assert "angora_rq.processes.worker" in imported  # the check sees the worker's own modules
    assert r.hget(K.rq_worker("w1"), RqWorker.death)  # it did register with RQ, and leave


def test_the_counters_move_with_the_heartbeat_and_survive_a_failed_beat(r: redis.Redis, keys: Keys,
                                                                          tmp_path: Path) -> None:
    """RQ's counters of a worker (rq-dashboard's finished, failed, working time) are written by its beat, not by each
    batch of ends; a beat that Redis refuses leaves them for the next."""
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    with r.pipeline() as pipe:
        for i, argv in enumerate((("true",), ("true",), ("false",))):
            State(keys, settings).create(pipe, JobDef(f"j{i}", ("go",), argv, replay=0),
                                         Message.create("go", None, f"run{i}", origin="test"), time.time())
        pipe.execute()
    worker = AngoraWorker(r, keys, settings, name="w1", concurrency=4)
    worker.start()
    try:
        while worker.stats.finalizes == 0 or worker.active or worker.outbox:
            worker.step(max_wait=0.05)
        counters = (RqWorker.successful_job_count, RqWorker.failed_job_count, RqWorker.total_working_time)
        assert r.hmget(K.rq_worker("w1"), *counters) == [None, None, None]  # the ends are recorded; not counted yet
        assert worker.lease.tally.ok + worker.lease.tally.failed == 3

        class Refused(redis.RedisError):
            pass

        real = redis.client.Pipeline.execute

        def refuse(self: redis.client.Pipeline, raise_on_error: bool = True) -> list:
            raise Refused("down")

        redis.client.Pipeline.execute = refuse  # type: ignore[method-assign]
        try:
            try:
                worker.lease.beat(time.time())
            except Refused:
                pass
        finally:
            redis.client.Pipeline.execute = real  # type: ignore[method-assign]
        worker.lease.beat(time.time())
        ok, failed, seconds = r.hmget(K.rq_worker("w1"), *counters)
        assert (int(ok), int(failed)) == (2, 1) and float(seconds) > 0
        worker.lease.beat(time.time())  # counted once
        assert r.hmget(K.rq_worker("w1"), *counters)[:2] == [b"2", b"1"]
        worker.lease.tally.add(1, 0, 0.5)  # what a last batch recorded since the last beat
    finally:
        worker.close()
    assert r.hmget(K.rq_worker("w1"), *counters)[:2] == [b"3", b"1"]  # written as the worker left
