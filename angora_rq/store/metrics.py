"""What /metrics reports, read from Redis at scrape time in two round trips, and the few counters kept for it.

Counts live in Redis, never in a process: a scrape reads the same numbers whichever web process answers, and
every matcher, worker and web process on every host adds to the same counters. Executions and durations are the
job stats hashes FINISH keeps (core/metrics.py); messages taken off the stream are counted by DISPATCH once per
batch; refusals by the code that refuses (not on the hot path: a refused send writes nothing else).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import redis

from angora_rq.core import keys as K
from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.schema import Metrics

REFUSALS = ("invalid", "backlog", "key_reuse")


def count_refused(r: redis.Redis, keys: Keys, reason: str, n: int = 1) -> None:
    """Count `n` refused sends (best effort: a Redis that cannot count has refused the sends anyway)."""
    with contextlib.suppress(redis.RedisError):
        r.hincrby(keys.metrics(), Metrics.refused + reason, n)


@dataclass
class Sample:
    """One scrape's worth of raw numbers (decoded), for the web app's collector to expose."""

    counters: dict[str, str] = field(default_factory=dict)
    beats: dict[str, str] = field(default_factory=dict)
    lease: str = ""
    delayed: int = 0
    stream_length: int = 0
    work: int = 0  # accepted work not finished yet: what the work budget (ANGORA_BACKLOG) is checked against
    pending: int = 0
    oldest_entry: Optional[str] = None  # id of the oldest entry not acknowledged by the matchers
    paused_jobs: int = 0
    paused_queues: int = 0
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> its stats hash
    held: dict[str, int] = field(default_factory=dict)  # job -> waiting for a concurrency slot
    paused_held: dict[str, int] = field(default_factory=dict)  # job -> held while paused
    queued: dict[str, int] = field(default_factory=dict)  # queue -> executions in it
    running: dict[str, int] = field(default_factory=dict)  # queue -> executions started from it


def read_sample(r: redis.Redis, keys: Keys, jobs: Sequence[str]) -> Sample:
    """Everything /metrics shows for the defined `jobs`: two pipelined round trips, however many jobs."""
    stream = keys.stream()
    with r.pipeline(transaction=False) as p:
        p.hgetall(keys.metrics())
        p.hgetall(keys.heartbeats())
        p.get(keys.scheduler_lease())
        p.zcard(keys.delayed())
        p.xlen(stream)
        p.smembers(K.RQ_QUEUES)
        p.scard(keys.paused_jobs())
        p.scard(keys.paused_queues())
        p.xinfo_groups(stream)
        p.xpending(stream, MATCHER_GROUP)
        p.get(keys.work())
        for job in jobs:
            p.hgetall(keys.job_stats(job))
            p.llen(keys.held(job))
            p.llen(keys.paused_held(job))
        replies = p.execute(raise_on_error=False)  # no stream or no group yet: XINFO and XPENDING fail, alone
    counters, beats, lease, delayed, length, queue_keys, pjobs, pqueues, groups, pending, work = replies[:11]
    s = Sample(to_str_dict(counters), to_str_dict(beats), to_str(lease), int(delayed), int(length),
               paused_jobs=int(pjobs), paused_queues=int(pqueues), work=max(0, int(to_str(work) or 0)))
    for i, job in enumerate(jobs):
        stats, held, paused_held = replies[11 + 3 * i: 14 + 3 * i]
        s.jobs[job], s.held[job], s.paused_held[job] = to_str_dict(stats), int(held), int(paused_held)
    last = _last_delivered(groups)
    if isinstance(pending, dict):
        s.pending = int(pending.get("pending") or 0)
        s.oldest_entry = to_str(pending["min"]) if s.pending else None
    queues = sorted(q for q in (keys.own_queue(to_str(k)) for k in queue_keys) if q)
    _read_queues(r, keys, s, stream, queues, last)
    return s


def _last_delivered(groups: Any) -> Optional[str]:
    """The matchers' group's last-delivered id, or None (no stream or group yet)."""
    if isinstance(groups, Exception):
        return None
    group = next((g for g in groups if to_str(g.get("name")) == MATCHER_GROUP), None)
    return to_str(group["last-delivered-id"]) if group else None


def _read_queues(r: redis.Redis, keys: Keys, s: Sample, stream: str, queues: list[str], last: Optional[str]) -> None:
    """Second round trip: each queue's length and started registry, and the first entry no matcher has read."""
    with r.pipeline(transaction=False) as p:
        for q in queues:
            p.llen(keys.rq_queue(q))
            p.zcard(keys.rq_started(q))
        p.xrange(stream, f"({last}" if last and last not in ("0", "0-0") else "-", "+", count=1)
        *replies, first_unread = p.execute()
    for i, q in enumerate(queues):
        s.queued[q], s.running[q] = int(replies[2 * i]), int(replies[2 * i + 1])
    if first_unread and s.oldest_entry is None:
        s.oldest_entry = to_str(first_unread[0][0])
