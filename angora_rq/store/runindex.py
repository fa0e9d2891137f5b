"""Run indexes for filtered run lists: finished runs by status, runs by job (keys.runs_by_status/runs_by_job).

A run's status is derived from its hash (core/runs.summarize), which many steps write. Rather than derive it in each
of them, every write that makes a run live again bumps the run's counter in `runs_unsettled` (SEND, State.create,
cancel, skip), and `RunIndex.settle()` reads those runs: a finished one goes into the index of its status and
leaves the hash; a live one stays (live runs are few; readers filter them in memory). The jobs of every run read go
into the per-job indexes. The writes are one Lua step (SETTLE_RUNS) that skips a run whose counter moved since it
was read, so a run reopened meanwhile stays unsettled and is read again next time.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from time import monotonic
from typing import Any, Mapping, Optional

import redis

from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.runs import PLAN_JSON, RunSummary, plan_of_hash, summarize, summarize_hash
from angora_rq.core.schema import NOT_STARTED, Run, Status
from angora_rq.store.plans import with_plans
from angora_rq.store.scripts import RUN_STATES, SETTLE_RUNS

FINISHED = (Status.succeeded, Status.failed, Status.canceled)  # run statuses with an index; the others are live
UNINDEXED_JOB = frozenset({Status.pending, Status.not_triggered})  # a job in these did not take part in the run
CHUNK = 500
SCRATCH_TTL = 10
# A filtered read settles first, and each of its live runs is read again at every settle (they stay unsettled):
# 20,000 live runs cost a read 0.3 s alone and 1.7 s among 8 at once (bench/README.md, fifteenth round), and every
# open page of a filtered list polls every 2-6 s. So when a settle found at least SHARE_FROM live runs, the reads
# of this process within SHARE_FOR seconds take its live runs instead of settling again (lists up to a second old,
# only while that many runs are in flight); below that each read settles.
SHARE_FROM = 2000
SHARE_FOR = 1.0


@dataclass(frozen=True)
class LiveRun:
    """A run still in flight, as the settler read it: enough to filter live runs in memory."""

    run_id: str
    status: str  # "" when not asked for
    created: float


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


@dataclass(frozen=True)
class Shared:
    """A settle made for reads, which other reads of this process may take (RunIndex.settle)."""

    at: float  # time.monotonic() when it started
    statuses: bool  # whether the live runs carry their status
    live: list[LiveRun]


class RunIndex:
    """Keeps the run indexes up to date and pages through them."""

    def __init__(self, r: redis.Redis, keys: Keys, chunk: int = CHUNK) -> None:
        self.r = r
        self.keys = keys
        self.chunk = chunk  # unsettled runs read per round trip when settling
        self._built = False
        self._reading = threading.Lock()  # one settle for the reads of this process at a time (web threads)
        self._shared: Optional[Shared] = None  # the last read's settle

    # -- keeping the indexes up to date ------------------------------------------------------------------
    def settle(self, statuses: bool = False) -> list[LiveRun]:
        """Index every unsettled run that has finished; return the others (live), newest first, with their status
        when `statuses` (it costs a look at every field of every live run, on the server). Calls of this process
        at once make one settle: a call takes the result of a settle that started after it was made; with many live
        runs, of one that started less than SHARE_FOR ago."""
        arrived = monotonic()
        with self._reading:
            last = self._shared
            if last is not None and (last.statuses or not statuses) and (
                    last.at > arrived or (len(last.live) >= SHARE_FROM and arrived - last.at < SHARE_FOR)):
                return list(last.live)
            at = monotonic()
            _, live = self.settle_part(0, None, statuses)
            live.sort(key=lambda run: run.created, reverse=True)
            self._shared = Shared(at, statuses, live)
            return list(live)

    def settle_part(self, cursor: int, most: Optional[int],
                    statuses: bool = False) -> tuple[int, list[LiveRun]]:
        """Settle the unsettled runs from HSCAN position `cursor` on, until `most` runs have been read (None: all).
        Returns where to go on from (0 once the scan is through) and the live runs read."""
        self._backfill()
        live: list[LiveRun] = []
        read = 0
        while True:
            cursor, batch = self.r.hscan(self.keys.runs_unsettled(), cursor, count=self.chunk)
            ids = [(to_str(k), to_str(v)) for k, v in batch.items()]
            for start in range(0, len(ids), self.chunk):
                live += self._settle_chunk(ids[start:start + self.chunk], statuses)
            read += len(ids)
            if int(cursor) == 0 or (most is not None and read >= most):
                return int(cursor), live

    def _settle_chunk(self, chunk: list[tuple[str, str]], statuses: bool) -> list[LiveRun]:
        """One chunk of unsettled runs: where they stand; the finished ones read whole and indexed."""
        flat = RUN_STATES.bind(mode="status" if statuses else "brief", not_started=" ".join(sorted(NOT_STARTED)),
                               runs=[self.keys.run(rid) for rid, _ in chunk]).run_borrowed(self.r)
        outcomes: list[tuple[str, str, str, float]] = []
        live: list[LiveRun] = []
        finished: list[tuple[str, str]] = []
        hashes: list[dict[str, str]] = []  # the finished runs' whole hashes, in the order of `finished`
        at = 0
        for rid, seen in chunk:
            created, active, canceled, started = (to_str(x) for x in flat[at:at + 4])
            n = int(flat[at + 4])
            fields = flat[at + 5:at + 5 + 2 * n]
            at += 5 + 2 * n
            if not created:
                outcomes.append((rid, seen, "gone", 0.0))
            elif int(active or 0) <= 0:
                finished.append((rid, seen))
                hashes.append({to_str(k): to_str(v) for k, v in zip(fields[::2], fields[1::2])})
            else:
                # A stand-in job: whether any job has started is all that tells a live run's status.
                status = summarize((), {}, {"": "running"} if started == "1" else {}, int(active),
                                   canceled == "1").status if statuses else ""
                live.append(LiveRun(rid, status, float(created)))
                outcomes.append((rid, seen, "live", float(created)))  # out of the finished indexes if reopened
        memberships: dict[str, list[str]] = {}
        created_at: dict[str, float] = {}
        for (rid, seen), (started_at, summary) in zip(finished, self._summaries(hashes)):
            created_at[rid] = started_at
            outcomes.append((rid, seen, summary.status if summary.status in FINISHED else "live", started_at))
            memberships[rid] = job_names(summary.jobs)
        self._record(outcomes, memberships, created_at)
        return live

    def _summaries(self, hashes: list[dict[str, str]]) -> list[tuple[float, RunSummary]]:
        """Start time and summary (plan included: one round trip for the plans) of finished runs' hashes (each
        read with its `created` by RUN_STATES). Each plan's JSON is parsed once: a chunk's runs mostly share a few."""
        out: list[tuple[float, RunSummary]] = []
        plans: dict[str, dict[str, Any]] = {}
        for h in with_plans(self.r, self.keys, hashes):
            text = h.get(PLAN_JSON, "")
            if text not in plans:
                plans[text] = plan_of_hash(h)
            out.append((float(h[Run.created]), summarize_hash(h, plans[text])))
        return out

    def _record(self, outcomes: list[tuple[str, str, str, float]], memberships: dict[str, list[str]],
                created: dict[str, float]) -> None:
        """One round trip: SETTLE_RUNS for the outcomes, and new job memberships into the per-job indexes."""
        k = self.keys
        runs: list[Any] = [x for row in outcomes for x in row]
        by_job: dict[str, dict[str, float]] = {}  # one ZADD per job, not per run and job
        for rid, names in memberships.items():
            for job in names:
                by_job.setdefault(job, {})[rid] = created[rid]
        with self.r.pipeline(transaction=False) as p:
            for job, members in by_job.items():
                p.zadd(k.runs_by_job(job), members)
            if by_job:
                p.sadd(k.runs_indexed_jobs(), *by_job)
            if outcomes:
                SETTLE_RUNS.bind(unsettled=k.runs_unsettled(), succeeded=k.runs_by_status(Status.succeeded),
                                 failed=k.runs_by_status(Status.failed), canceled=k.runs_by_status(Status.canceled),
                                 runs=runs).queue(p)
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
                    p.hsetnx(self.keys.runs_unsettled(), to_str(rid), 0)
                p.execute()
            start += CHUNK
        self.r.set(self.keys.runs_index_built(), 1)
        self._built = True

    def trim(self, before: float) -> None:
        """Drop index entries of runs started before `before` (the runs index no longer lists them)."""
        names = [to_str(n) for n in self.r.smembers(self.keys.runs_indexed_jobs())]
        with self.r.pipeline(transaction=False) as p:
            for key in [*(self.keys.runs_by_status(s) for s in FINISHED), *(self.keys.runs_by_job(n) for n in names)]:
                p.zremrangebyscore(key, "-inf", f"({before}")
            p.execute()

    # -- reading ---------------------------------------------------------------------------------------------
    def page(self, window: Window, status: Optional[str], job: Optional[str]) -> tuple[int, list[str]]:
        """(how many runs match, the ids of the page) for a status and/or job filter, newest first."""
        if status is None and job is None:
            raise ValueError("page() needs a status or a job")
        if status is not None and status not in FINISHED:
            live = [run for run in self.settle(statuses=True) if run.status == status and window.holds(run.created)]
            if job is not None:
                ran = self._ran(live, job)
                live = [run for run in live if run.run_id in ran]
            return len(live), [run.run_id for run in live[window.offset:window.offset + window.limit]]
        live = self.settle()
        if status is None:  # job only: the job's index, with the live runs it has run in added now
            self._ran(live, str(job), index=True)
            return self._slice(self.keys.runs_by_job(str(job)), window)
        if job is None:
            return self._slice(self.keys.runs_by_status(status), window)
        scratch = self.keys.runs_scratch(uuid.uuid4().hex)
        with self.r.pipeline() as p:
            p.zinterstore(scratch, [self.keys.runs_by_status(status), self.keys.runs_by_job(job)], aggregate="MAX")
            p.expire(scratch, SCRATCH_TTL)
            p.zcount(scratch, window.lo, window.hi)
            p.zrevrangebyscore(scratch, window.hi, window.lo, start=window.offset, num=window.limit)
            p.delete(scratch)
            _, _, total, ids, _ = p.execute()
        return int(total), [to_str(i) for i in ids]

    def _ran(self, live: list[LiveRun], job: str, index: bool = False) -> set[str]:
        """The live runs in which `job` has an execution; with `index`, also put them in the job's index (a run
        that ran a job stays in its index: that never changes back)."""
        if not live:
            return set()
        with self.r.pipeline(transaction=False) as p:
            for run in live:
                p.hexists(self.keys.run(run.run_id), Run.job_status + job)
            found = [run for run, yes in zip(live, p.execute()) if yes]
        if index and found:
            with self.r.pipeline(transaction=False) as p:
                p.zadd(self.keys.runs_by_job(job), {run.run_id: run.created for run in found})
                p.sadd(self.keys.runs_indexed_jobs(), job)
                p.execute()
        return {run.run_id for run in found}

    def _slice(self, key: str, window: Window) -> tuple[int, list[str]]:
        with self.r.pipeline(transaction=False) as p:
            p.zcount(key, window.lo, window.hi)
            p.zrevrangebyscore(key, window.hi, window.lo, start=window.offset, num=window.limit)
            total, ids = p.execute()
        return int(total), [to_str(i) for i in ids]


def job_names(jobs: Mapping[str, str]) -> list[str]:
    """The jobs that took part in a run (a summary's job -> status): ran, or were blocked by a failure."""
    return [name for name, status in jobs.items() if status not in UNINDEXED_JOB]
