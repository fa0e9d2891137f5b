"""RQ's record of a worker, written as rq 3's `Worker.register_birth` and `register_death` write it, so rq-dashboard
and `rq info` list Angora's workers.

The record: the hash `rq:worker:<name>` (birth, last_heartbeat, queues, pid, hostname, ip_address, version,
python_version; `death` once gone) and the worker's hash key in `rq:workers` and in `rq:workers:<queue>` for each
of its queues. Written here rather than through `rq.Worker` because importing rq's package is what the worker
process would pay for it: about 1.3 MiB of RSS and 44 modules, for three writes. The worker's heartbeat keeps the
hash's `last_heartbeat`, `state` and expiry up to date (processes/lease.py).
"""
from __future__ import annotations

import os
import socket
import sys
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
