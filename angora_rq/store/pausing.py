"""Pause and resume jobs and queues.

- A paused job (`keys.paused_jobs()`): the matcher still dispatches the messages that trigger it, but its
  DISPATCH script (store/lua/dispatch.lua) creates each execution `held` and appends it to `keys.paused_held(job)`
  instead of queueing it; the script reads the paused set itself, atomically with those writes, so a pause takes
  effect from the next batch. Resume is one Lua call (resume.lua): the job leaves the set and its held executions
  go, in order, to the end of their RQ queue. Nothing is lost, nothing runs while paused.
- A paused queue (`keys.paused_queues()`): workers take nothing from it (the CLAIM script checks the set).
- Pausing never stops a running command; kill does that.
"""
from __future__ import annotations

import re
import time
from typing import Any, Iterable, Optional

import redis

from angora_rq.core.codec import to_str
from angora_rq.core import keys as K
from angora_rq.core.errors import InvalidInput, NotFound
from angora_rq.core.keys import Keys
from angora_rq.store.events import OUTBOX_CAP, Events
from angora_rq.store.scripts import RESUME
from angora_rq.store.state import BELL_CAP

QUEUE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")  # what definitions accept for `queue:`


def check_queue(name: Any) -> str:
    """A queue name as a worker's `-q` takes it (InvalidInput otherwise)."""
    if not isinstance(name, str) or not QUEUE_RE.match(name):
        raise InvalidInput("a queue name is 1-100 of A-Z a-z 0-9 _ . -")
    return name


def check_job(name: str, known: Optional[Iterable[str]]) -> str:
    """`name` if it is a defined job (when the definitions are known), else NotFound."""
    if known is not None and name not in set(known):
        raise NotFound(f"no job named {name[:80]!r}")
    return name


def pause_job(r: redis.Redis, keys: Keys, job: str) -> dict[str, Any]:
    """Hold every execution of `job` dispatched from now on (running ones go on)."""
    added = r.sadd(keys.paused_jobs(), job)
    return {"job": job, "paused": True, "changed": bool(added)}


def resume_job(r: redis.Redis, keys: Keys, job: str) -> dict[str, Any]:
    """Unpause `job` and queue what it held, in order (one atomic step)."""
    k = keys
    was, released = RESUME.bind(
        paused_jobs=k.paused_jobs(), paused_held=k.paused_held(job), rq_queues=K.RQ_QUEUES, job=job,
        exec_prefix=k.execution(""), rq_job_prefix=K.rq_job(""), rq_queue_prefix=k.rq_queue(""), run_prefix=k.run(""),
        bell_prefix=k.bell(""), bell_cap=BELL_CAP, events=k.events(), stream=k.stream(), runs=k.runs(),
        outbox=k.webhook_outbox(), work=k.work(), accepted=k.accepted(), unsettled=k.runs_unsettled(),
        now=repr(time.time()), outbox_cap=OUTBOX_CAP, events_on="1" if Events(r, keys).any() else "",
    ).run_borrowed(r)
    return {"job": job, "paused": False, "changed": bool(was), "released": int(released)}


def pause_queue(r: redis.Redis, keys: Keys, queue: str) -> dict[str, Any]:
    """Workers stop taking executions from `queue` (what runs goes on; new work waits in the queue)."""
    added = r.sadd(keys.paused_queues(), check_queue(queue))
    return {"queue": queue, "paused": True, "changed": bool(added)}


def resume_queue(r: redis.Redis, keys: Keys, queue: str) -> dict[str, Any]:
    """Workers take executions from `queue` again (its bell wakes idle ones at once)."""
    check_queue(queue)
    with r.pipeline() as p:
        p.srem(keys.paused_queues(), queue)
        p.rpush(keys.bell(queue), 1)
        p.ltrim(keys.bell(queue), 0, BELL_CAP - 1)
        removed, _, _ = p.execute()
    return {"queue": queue, "paused": False, "changed": bool(removed)}


def paused_jobs(r: redis.Redis, keys: Keys) -> set[str]:
    """Names of the paused jobs."""
    return {to_str(v) for v in r.smembers(keys.paused_jobs())}


def paused(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """What is paused: jobs (with how many executions each holds) and queues (with how many wait). Two round trips."""
    with r.pipeline(transaction=False) as p:
        p.smembers(keys.paused_jobs())
        p.smembers(keys.paused_queues())
        jobs_raw, queues_raw = p.execute()
    jobs, queues = sorted(to_str(v) for v in jobs_raw), sorted(to_str(v) for v in queues_raw)
    with r.pipeline(transaction=False) as p:
        for j in jobs:
            p.llen(keys.paused_held(j))
        for q in queues:
            p.llen(keys.rq_queue(q))
        counts = p.execute()
    return {
        "jobs": [{"name": j, "held": int(n)} for j, n in zip(jobs, counts[:len(jobs)])],
        "queues": [{"name": q, "waiting": int(n)} for q, n in zip(queues, counts[len(jobs):])],
    }
