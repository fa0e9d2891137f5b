"""Run indexes for filtered run lists: finished runs by status, runs by job (keys.runs_by_status/runs_by_job).

A run's status is derived from its hash (core/runs.summarize), which many steps write. Rather than derive it in each
of them, every write that makes a run live again bumps the run's counter in `runs_unsettled` (SEND, State.create,
cancel, skip), and `RunIndex.settle()` reads those runs: a finished one goes into the index of its status and
leaves the hash; a live one stays (live runs are few; readers filter them in memory). The jobs of every run read go
into the per-job indexes. The writes are one Lua step (SETTLE_RUNS) that skips a run whose counter moved since it
was read, so a run reopened meanwhile stays unsettled and is read again next time.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import redis

from angora_rq.core.keys import Keys
from angora_rq.store.scripts import SETTLE_RUNS

FINISHED = ("succeeded", "failed", "canceled")  # statuses with an index; the others are live
UNINDEXED_JOB = frozenset({"pending", "not_triggered"})  # a job in these did not take part in the run
CHUNK = 500
SCRATCH_TTL = 10


@dataclass(frozen=True)
class Window:
    """Which runs a list wants: start-time bounds (None = open) and a page."""

    offset: int = 0
    limit: int = 50
    since: Optional[float] = None
    until: Optional[float] = None

    @property
    def lo(self) -> Any:
        """ZSET lower bound."""
        return "-inf" if self.since is None else self.since

    @property
    def hi(self) -> Any:
        """ZSET upper bound."""
        return "+inf" if self.until is None else self.until

    def holds(self, created: Optional[float]) -> bool:
        """Whether a run started at `created` is inside the bounds."""
        t = created or 0.0
        return (self.since is None or t >= self.since) and (self.until is None or t <= self.until)


class RunIndex:
    """Keeps the run indexes up to date and pages through them."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._built = False

    # -- keeping the indexes up to date ------------------------------------------------------------------
    def settle(self) -> list[dict[str, Any]]:
        """Index every unsettled run; return the views of those still live (newest first)."""
        from angora_rq.store.queries import decode, run_view

        self._backfill()
        live: list[dict[str, Any]] = []
        cursor = 0
        while True:
            cursor, batch = self.r.hscan(self.keys.runs_unsettled(), cursor, count=CHUNK)
            ids = [(_s(k), _s(v)) for k, v in batch.items()]
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                with self.r.pipeline(transaction=False) as p:
                    for rid, _ in chunk:
                        p.hgetall(self.keys.run(rid))
                    raws = p.execute()
                views = [run_view(decode(raw)) if raw and b"created" in raw else None for raw in raws]
                self._record(chunk, views)
                live += [v for v in views if v is not None and v["status"] not in FINISHED]
            if int(cursor) == 0:
                break
        live.sort(key=lambda v: v["created"] or 0.0, reverse=True)
        return live

    def _record(self, chunk: list[tuple[str, str]], views: list[Optional[dict[str, Any]]]) -> None:
        """One round trip: SETTLE_RUNS for the chunk, and each run's jobs into the per-job indexes."""
        k = self.keys
        args: list[Any] = [k.runs_unsettled(), len(FINISHED)]
        for status in FINISHED:
            args += [status, k.runs_by_status(status)]
        jobs: set[str] = set()
        with self.r.pipeline(transaction=False) as p:
            for (rid, seen), view in zip(chunk, views):
                if view is None:
                    args += [rid, seen, "gone", 0]
                    continue
                status = view["status"] if view["status"] in FINISHED else "live"
                args += [rid, seen, status, view["created"]]
                for job in job_names(view):
                    p.zadd(k.runs_by_job(job), {rid: view["created"]})
                    jobs.add(job)
            if jobs:
                p.sadd(k.runs_indexed_jobs(), *jobs)
            p.eval(SETTLE_RUNS, 0, *args)
            p.execute()

    def _backfill(self) -> None:
        """Once per keyspace: runs recorded before these indexes existed are added to the unsettled hash."""
        if self._built:
            return
        if self.r.exists(self.keys.runs_index_built()):
            self._built = True
            return
        start = 0
        while True:
            ids = self.r.zrange(self.keys.runs(), start, start + CHUNK - 1)
            if not ids:
                break
            with self.r.pipeline(transaction=False) as p:
                for rid in ids:
                    p.hsetnx(self.keys.runs_unsettled(), _s(rid), 0)
                p.execute()
            start += CHUNK
        self.r.set(self.keys.runs_index_built(), 1)
        self._built = True

    def trim(self, before: float) -> None:
        """Drop index entries of runs started before `before` (the runs index no longer lists them)."""
        names = [_s(n) for n in self.r.smembers(self.keys.runs_indexed_jobs())]
        with self.r.pipeline(transaction=False) as p:
            for key in [*(self.keys.runs_by_status(s) for s in FINISHED), *(self.keys.runs_by_job(n) for n in names)]:
                p.zremrangebyscore(key, "-inf", f"({before}")
            p.execute()

    # -- reading ---------------------------------------------------------------------------------------------
    def page(self, window: Window, status: Optional[str], job: Optional[str]) -> tuple[int, list[str]]:
        """(how many runs match, the ids of the page) for a status and/or job filter, newest first."""
        live = self.settle()
        if status is not None and status not in FINISHED:
            matches = [v["run_id"] for v in live if v["status"] == status and window.holds(v["created"])
                       and (job is None or job in job_names(v))]
            return len(matches), matches[window.offset:window.offset + window.limit]
        if status is None and job is None:
            raise ValueError("page() needs a status or a job")
        if status is None or job is None:
            key = self.keys.runs_by_status(status) if status is not None else self.keys.runs_by_job(str(job))
            return self._slice(key, window)
        scratch = self.keys.runs_scratch(uuid.uuid4().hex)
        with self.r.pipeline() as p:
            p.zinterstore(scratch, [self.keys.runs_by_status(status), self.keys.runs_by_job(job)], aggregate="MAX")
            p.expire(scratch, SCRATCH_TTL)
            p.zcount(scratch, window.lo, window.hi)
            p.zrevrangebyscore(scratch, window.hi, window.lo, start=window.offset, num=window.limit)
            p.delete(scratch)
            _, _, total, ids, _ = p.execute()
        return int(total), [_s(i) for i in ids]

    def _slice(self, key: str, window: Window) -> tuple[int, list[str]]:
        with self.r.pipeline(transaction=False) as p:
            p.zcount(key, window.lo, window.hi)
            p.zrevrangebyscore(key, window.hi, window.lo, start=window.offset, num=window.limit)
            total, ids = p.execute()
        return int(total), [_s(i) for i in ids]


def job_names(view: dict[str, Any]) -> Iterable[str]:
    """The jobs that took part in a run: ran, or were blocked by a failure (not those still pending)."""
    return [name for name, j in view["jobs"].items() if j["status"] not in UNINDEXED_JOB]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
