"""Pause and resume jobs and queues.

- A paused job (`keys.paused_jobs()`): the matcher still dispatches the messages that trigger it, but its
  DISPATCH script (scripts.py) creates each execution `held` and appends it to `keys.paused_held(job)` instead
  of queueing it; the script reads the paused set itself, atomically with those writes, so a pause takes effect
  from the next batch. Resume is one Lua call: the job leaves the set and its held executions go, in order, to
  the end of their RQ queue. Nothing is lost, nothing runs while paused.
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
from angora_rq.store.state import BELL_CAP

QUEUE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")  # what definitions accept for `queue:`

# KEYS: paused jobs set, the job's paused_held list, rq queues set
# ARGV: job, exec_prefix, rqjob_prefix, rqqueue_prefix, run_prefix, bell_prefix, now, bell_cap
# -> {1 if the job was paused else 0, executions queued}
RESUME = """
local was = redis.call('SREM', KEYS[1], ARGV[1])
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
local n, rung = 0, {}
for _, id in ipairs(ids) do
  local ek = ARGV[2] .. id
  local e = redis.call('HMGET', ek, 'status', 'queue', 'run', 'job')
  -- killed while held, or expired: nothing to queue
  if e[1] == 'held' then
    redis.call('HSET', ek, 'status', 'queued', 'queued', ARGV[7])
    redis.call('HSET', ARGV[3] .. id, 'status', 'queued')
    redis.call('HSET', ARGV[5] .. e[3], 's:' .. e[4], 'queued')
    redis.call('RPUSH', ARGV[4] .. e[2], id)
    redis.call('SADD', KEYS[3], ARGV[4] .. e[2])
    rung[e[2]] = true
    n = n + 1
  end
end
for q, _ in pairs(rung) do
  redis.call('RPUSH', ARGV[6] .. q, 1)
  redis.call('LTRIM', ARGV[6] .. q, 0, tonumber(ARGV[8]) - 1)
end
return {was, n}
"""


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


def resume_job(r: redis.Redis, keys: Keys, job: str, now: Optional[float] = None) -> dict[str, Any]:
    """Unpause `job` and queue what it held, in order (one atomic step)."""
    k = keys
    was, released = r.eval(RESUME, 3, k.paused_jobs(), k.paused_held(job), K.RQ_QUEUES,
                           job, k.execution(""), K.rq_job(""), K.rq_queue(""), k.run(""), k.bell(""),
                           repr(time.time() if now is None else now), BELL_CAP)
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
            p.llen(K.rq_queue(q))
        counts = p.execute()
    return {
        "jobs": [{"name": j, "held": int(n)} for j, n in zip(jobs, counts[:len(jobs)])],
        "queues": [{"name": q, "waiting": int(n)} for q, n in zip(queues, counts[len(jobs):])],
    }
