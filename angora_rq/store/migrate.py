"""`angora migrate`: convert the records of layout 1 under a prefix to layout 2 in place (core/layout.py).

Run with every Angora process of the deployment stopped. Unfinished work is converted like the rest and runs
afterwards as it was defined (its spec moves to its definitions version). Each record is converted on its own and
only if it is still in the old layout, so a migration stopped half-way can be run again. The layout number is
written last.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from angora_rq.core import keys as K
from angora_rq.core import layout as L
from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core.errors import Conflict
from angora_rq.core.keys import DEFAULT_PREFIX, Keys
from angora_rq.core.schema import Defs, Exec, Run
from angora_rq.store.connection import Redis
from angora_rq.store.layout import found

ROLES_SILENT = 10.0  # seconds without a heartbeat before a role counts as stopped (they beat every 0.5-2 s)
SCAN = 1000


@dataclass
class Migrated:
    """What one migration converted."""

    executions: int = 0
    runs: int = 0
    jobs: int = 0
    rq_jobs_dropped: int = 0
    queued_moved: int = 0
    dedupe_keys_dropped: int = 0
    layout: int = L.LAYOUT

    def to_json(self) -> dict[str, Any]:
        """For `angora migrate --json`."""
        return asdict(self)


def migrate(r: Redis, keys: Keys, now: float | None = None) -> Migrated:
    """Convert every layout-1 record under `keys.prefix`; Conflict while a role of the deployment still runs."""
    now = time.time() if now is None else now
    done = Migrated()
    if found(r, keys) != L.PREVIOUS:
        r.setnx(keys.schema(), L.LAYOUT)
        return done
    _check_stopped(r, keys, now)
    queues: set[str] = set()
    for xid in _ids(r, keys.execution("*"), keys.execution("")):
        _execution(r, keys, xid, done, queues)
    joins: dict[str, list[str]] = {}
    for name in _ids(r, keys.v1_join("*", "*"), keys.v1_join("", "")[:-1]):
        run_id, _, job = name.partition(":")  # run ids hold no colon
        joins.setdefault(run_id, []).append(job)
    for run_id in _ids(r, keys.run("*"), keys.run("")):
        if ":" not in run_id:  # not a run's `:execs` index (converted with its run)
            _run(r, keys, run_id, joins.get(run_id, []), done)
    for job in _ids(r, keys.job_stats("*"), keys.job_stats("")):
        if ":" not in job:
            _job(r, keys, job, done)
    for key in r.scan_iter(match=keys.v1_dedupe_pattern(), count=SCAN):
        done.dedupe_keys_dropped += int(r.delete(key))
    if keys.prefix != DEFAULT_PREFIX:
        for q in queues:
            done.queued_moved += _own_queue(r, keys, q)
    if not r.exists(keys.work()):
        r.set(keys.work(), sum(int(to_str(a) or 0) for a in _actives(r, keys)))
    r.set(keys.schema(), L.LAYOUT)
    return done


def _check_stopped(r: Redis, keys: Keys, now: float) -> None:
    beats = {to_str(k): float(to_str(v) or 0) for k, v in r.hgetall(keys.heartbeats()).items()}
    alive = sorted(name for name, t in beats.items() if now - t < ROLES_SILENT)
    if alive:
        raise Conflict(f"Angora processes of prefix {keys.prefix!r} are running ({', '.join(alive)}): stop every "
                       f"one of them, wait {ROLES_SILENT:.0f} s, then run `angora migrate` again")


def _ids(r: Redis, match: str, prefix: str) -> Iterator[str]:
    """The ids of the keys matching `match` (the part after `prefix`), each once."""
    seen: set[str] = set()
    for key in r.scan_iter(match=match, count=SCAN):
        name = to_str(key)[len(prefix):]
        if name not in seen:
            seen.add(name)
            yield name


def _execution(r: Redis, keys: Keys, xid: str, done: Migrated, queues: set[str]) -> None:
    ek = keys.execution(xid)
    old = to_str_dict(r.hgetall(ek))
    if not L.is_old_execution(old):
        return
    fields, spec, version, tail = L.execution(old)
    queue = old.get("queue") or "default"
    queues.add(queue)
    rq = {name: to_str(v) for name, v in zip(L.RQ_KEPT, r.hmget(K.rq_job(xid), *L.RQ_KEPT))} \
        if r.exists(K.rq_job(xid)) else {}  # (its `data` is a pickle: not text)
    run_kept = bool(r.exists(keys.run(old.get("run", ""))))
    with r.pipeline() as p:
        if spec:
            p.hsetnx(keys.definitions(version), Defs.job + fields[Exec.job], spec)
            p.zadd(keys.definitions_index(), {version: time.time()})
        p.delete(ek)
        p.hset(ek, mapping=fields)
        if tail:
            p.set(keys.tail(xid), tail)
        if run_kept:
            pass  # kept while its run is: the janitor drops it with the run
        else:
            p.expire(ek, 86400)  # its run expired already: nothing will drop it, so it goes by itself
        if L.finished_ok(old):
            p.delete(K.rq_job(xid))
            p.zrem(K.rq_registry_named("finished", queue), xid)
            p.zrem(keys.rq_finished(queue), xid)
            done.rq_jobs_dropped += 1 if rq else 0
        elif rq:
            p.delete(K.rq_job(xid))
            p.hset(K.rq_job(xid), mapping=L.rq_job(rq, keys.rq_name(queue)))  # type: ignore[arg-type]
        p.execute()
    done.executions += 1


def _run(r: Redis, keys: Keys, run_id: str, joins: list[str], done: Migrated) -> None:
    rk = keys.run(run_id)
    old = to_str_dict(r.hgetall(rk))
    if not L.is_old_run(old):
        return
    fields, plan, version = L.run(old)
    execs = [to_str(x) for x in r.zrange(keys.v1_run_executions(run_id), 0, -1)]
    with r.pipeline(transaction=False) as p:
        for xid in execs:
            p.hget(keys.execution(xid), Exec.job)
        jobs = [to_str(j) for j in p.execute()]
    with r.pipeline() as p:
        if plan:
            p.hsetnx(keys.definitions(version), Defs.plan + fields[Run.plan], plan)
            p.zadd(keys.definitions_index(), {version: time.time()})
        p.delete(rk, keys.v1_run_executions(run_id), *(keys.v1_join(run_id, j) for j in joins))
        p.hset(rk, mapping={**fields, **{Run.execution + x: j for x, j in zip(execs, jobs) if j},
                            **{Run.join + j: "1" for j in joins}})
        p.zadd(keys.runs(), {run_id: float(old.get("created") or 0)}, nx=True)  # runs trimmed off the old index
        p.execute()
    done.runs += 1


def _job(r: Redis, keys: Keys, job: str, done: Migrated) -> None:
    """A job's statistics renamed, and its history index made a list (newest first)."""
    sk, ek = keys.job_stats(job), keys.job_executions(job)
    stats = L.job_stats(to_str_dict(r.hgetall(sk)))
    history = [to_str(x) for x in r.zrevrange(ek, 0, -1)] if r.type(ek) == b"zset" else None
    with r.pipeline() as p:
        if stats is not None:
            p.delete(sk)
            p.hset(sk, mapping=stats)
        if history is not None:
            p.delete(ek)
            if history:
                p.rpush(ek, *history)
        p.execute()
    done.jobs += int(stats is not None or history is not None)


def _own_queue(r: Redis, keys: Keys, queue: str) -> int:
    """Under a prefix of its own, a deployment's queue and registries get their prefixed RQ name (layout 1 shared
    RQ's plain ones): the ids of this prefix's executions move, in order."""
    moved = 0
    old, new = K.rq_queue_named(queue), keys.rq_queue(queue)
    for xid in [to_str(x) for x in r.lrange(old, 0, -1)]:
        if r.exists(keys.execution(xid)):
            with r.pipeline() as p:
                p.lrem(old, 1, xid)
                p.rpush(new, xid)
                p.sadd(K.RQ_QUEUES, new)
                p.execute()
            moved += 1
    for old_reg, new_reg in ((K.rq_registry_named("wip", queue), keys.rq_started(queue)),
                             (K.rq_registry_named("failed", queue), keys.rq_failed(queue))):
        for member, score in r.zrange(old_reg, 0, -1, withscores=True):
            if r.exists(keys.execution(to_str(member).split(":")[0])):
                with r.pipeline() as p:
                    p.zrem(old_reg, member)
                    p.zadd(new_reg, {member: score})
                    p.execute()
    return moved


def _actives(r: Redis, keys: Keys) -> Iterator[Any]:
    for run_id in _ids(r, keys.run("*"), keys.run("")):
        if ":" not in run_id:
            yield r.hget(keys.run(run_id), Run.active)


def report(done: Migrated) -> str:
    """One line for the CLI."""
    return json.dumps(done.to_json())
