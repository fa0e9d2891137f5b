"""RQ's record of a worker, written as rq 3's `Worker.register_birth` and `register_death` write it, so rq-dashboard
and `rq info` list Angora's workers.

The record: the hash `rq:worker:<name>` (birth, last_heartbeat, queues, pid, hostname, ip_address, version,
python_version; `death` once gone) and the worker's hash key in `rq:workers` and in `rq:workers:<queue>` for each
of its queues. Written here rather than through `rq.Worker` because importing rq's package is what the worker
process would pay for it: about 1.3 MiB of RSS and 44 modules, for three writes. The worker's heartbeat keeps the
hash's `last_heartbeat`, `state` and expiry up to date (processes/lease.py), and writes the counters of what it
finished (`Tally`) with each beat rather than with each batch of ends.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from functools import lru_cache
from importlib.metadata import version
from typing import Sequence

from angora_rq.core import keys as K
from angora_rq.core.rqcompat import utc_iso
from angora_rq.core.schema import RqWorker
from angora_rq.store.connection import Pipeline, Redis, RedisError

# A dead worker's hash stays this long (seconds), as RQ keeps it.
DEATH_TTL = 60
# RQ's hash outlives the worker's TTL by this much (seconds), as RQ's does.
TTL_MARGIN = 60


@lru_cache(maxsize=1)
def rq_version() -> str:
    """RQ's version, from its installed metadata: reading it does not import rq's package."""
    return version("rq")


def client_address(r: Redis, name: str) -> str:
    """Name a connection after the worker and return its address as Redis sees it (RQ's `ip_address`), in one round
    trip; `unknown`, as RQ writes then, when the server refuses CLIENT SETNAME or CLIENT INFO (Redis < 6.2)."""
    with r.pipeline(transaction=False) as p:
        p.client_setname(name)
        p.client_info()
        named, info = p.execute(raise_on_error=False)
    if isinstance(named, RedisError) or not isinstance(info, dict):
        return "unknown"
    return str(info.get("addr", "unknown"))


def birth(pipe: Pipeline, name: str, rq_queues: Sequence[str], ttl: float, ip_address: str, now: float) -> None:
    """Write a new worker's record into `pipe` (a MULTI pipeline): a fresh hash, its place in RQ's worker sets."""
    key = K.rq_worker(name)
    pipe.delete(key)
    pipe.hset(key, mapping={
        RqWorker.birth: utc_iso(now),
        RqWorker.last_heartbeat: utc_iso(now),
        RqWorker.queues: ",".join(rq_queues),
        RqWorker.pid: os.getpid(),
        RqWorker.hostname: socket.gethostname(),
        RqWorker.ip_address: ip_address,
        RqWorker.version: rq_version(),
        RqWorker.python_version: sys.version,
    })
    pipe.sadd(K.RQ_WORKERS, key)
    for q in rq_queues:
        pipe.sadd(K.rq_queue_workers(q), key)
    pipe.expire(key, int(ttl) + TTL_MARGIN)


def death(pipe: Pipeline, name: str, rq_queues: Sequence[str], now: float) -> None:
    """Write a worker's end into `pipe` (a MULTI pipeline): out of RQ's worker sets, its hash dated and expiring."""
    key = K.rq_worker(name)
    pipe.srem(K.RQ_WORKERS, key)
    for q in rq_queues:
        pipe.srem(K.rq_queue_workers(q), key)
    pipe.hset(key, RqWorker.death, utc_iso(now))
    pipe.expire(key, DEATH_TTL)
    pipe.delete(K.rq_worker_executions(name))


class Tally:
    """A worker's finished and failed executions and working time since its last beat, for RQ's counters of the
    worker (`successful_job_count`, `failed_job_count`, `total_working_time`: rq-dashboard, `rq info`).

    Written with the heartbeat, once a second, instead of in each batch's FINISH: two or three commands fewer per
    batch, for counters that only a person reads. A worker killed at once loses its last second of them, in a hash
    that expires with it (a worker that stops writes them as it leaves)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the loop adds, the heartbeat thread may write
        self.ok = 0
        self.failed = 0
        self.seconds = 0.0

    def add(self, ok: int, failed: int, seconds: float) -> None:
        """Count what a batch of ends recorded."""
        with self._lock:
            self.ok += ok
            self.failed += failed
            self.seconds += seconds

    def take(self) -> tuple[int, int, float]:
        """What was counted since the last take, and start again from zero."""
        with self._lock:
            taken = (self.ok, self.failed, self.seconds)
            self.ok, self.failed, self.seconds = 0, 0, 0.0
        return taken

    def write(self, pipe: Pipeline, name: str) -> tuple[int, int, float]:
        """Queue on `pipe` the increments of worker `name`'s counters; returns them, for `add` if the pipe fails."""
        ok, failed, seconds = taken = self.take()
        key = K.rq_worker(name)
        if ok:
            pipe.hincrby(key, RqWorker.successful_job_count, ok)
        if failed:
            pipe.hincrby(key, RqWorker.failed_job_count, failed)
        if ok or failed:
            pipe.hincrbyfloat(key, RqWorker.total_working_time, seconds)
        return taken
