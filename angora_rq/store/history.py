"""What Angora keeps of finished work, and its trimming: whole finished runs, oldest first (never an active one).

Nothing of a run expires by itself (no TTLs): an execution waiting for days for its turn, a pause or its
backoff must still be there when its turn comes. The janitor drops finished runs with their executions once they
are older than `retention`, beyond `max_runs`, or while Redis holds more than HISTORY_SHARE of the memory budget
(`ANGORA_MAX_MEMORY`, core/pressure.py); then the definitions versions no run or execution kept refers to, and the
statistics of jobs nothing kept ran.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from angora_rq.core import keys as K
from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Status
from angora_rq.store.connection import Redis
from angora_rq.store.scripts import DROP_RUNS, DROP_VERSIONS

CHUNK = 200  # runs per DROP_RUNS call: one call stays short (Redis serves nothing else meanwhile)
VERSION_MARGIN = 3600.0  # seconds: clocks of the hosts writing run times and version uses may differ this much


@dataclass
class Dropped:
    """What one trimming pass removed."""

    runs: int = 0
    executions: int = 0

    def add(self, other: "Dropped") -> None:
        """Count another pass's drops in this one."""
        self.runs += other.runs
        self.executions += other.executions


def drop_runs(r: Redis, keys: Keys, run_ids: list[str]) -> tuple[Dropped, int]:
    """Drop those of `run_ids` that are finished, with their executions; returns what went and how many stayed."""
    if not run_ids:
        return Dropped(), 0
    runs, execs, kept = DROP_RUNS.bind(
        runs=keys.runs(), unsettled=keys.runs_unsettled(), succeeded=keys.runs_by_status(Status.succeeded),
        failed=keys.runs_by_status(Status.failed), canceled=keys.runs_by_status(Status.canceled),
        run_prefix=keys.run(""), exec_prefix=keys.execution(""), rq_job_prefix=K.rq_job(""), tail_prefix=keys.tail(""),
        rq_failed_prefix=keys.rq_failed(""), by_job_prefix=keys.runs_by_job(""), run_ids=run_ids,
    ).run_borrowed(r)
    return Dropped(int(runs), int(execs)), int(kept)


def drop_oldest(r: Redis, keys: Keys, until: Optional[float] = None, count: Optional[int] = None,
                enough: Optional[Callable[[], bool]] = None) -> Dropped:
    """Drop finished runs oldest first: those started before `until`, at most `count` of them, or until
    `enough()` says so (checked after each chunk). Active runs are stepped over, never dropped."""
    total, skip = Dropped(), 0
    while count is None or total.runs < count:
        want = CHUNK if count is None else min(CHUNK, count - total.runs)
        if until is None:
            ids = r.zrange(keys.runs(), skip, skip + want - 1)
        else:
            ids = r.zrangebyscore(keys.runs(), "-inf", f"({until}", start=skip, num=want)
        if not ids:
            break
        dropped, kept = drop_runs(r, keys, [to_str(i) for i in ids])
        total.add(dropped)
        skip += kept
        if enough is not None and enough():
            break
    return total


def keep_under(r: Redis, keys: Keys, target: int) -> Dropped:
    """Drop finished runs, oldest first, until Redis' used_memory (read again after each chunk of runs) is at most
    `target` bytes, or no finished run is left."""
    if target <= 0 or used_memory(r) <= target:
        return Dropped()
    return drop_oldest(r, keys, enough=lambda: used_memory(r) <= target)


def used_memory(r: Redis) -> int:
    """Redis' used_memory now (INFO memory)."""
    return int(r.info("memory")["used_memory"])


def reach(r: Redis, keys: Keys) -> dict[str, Optional[float]]:
    """How far back history reaches: when the oldest run kept started, and how many runs are kept."""
    with r.pipeline(transaction=False) as p:
        p.zrange(keys.runs(), 0, 0, withscores=True)
        p.zcard(keys.runs())
        first, count = p.execute()
    return {"since": float(first[0][1]) if first else None, "runs": int(count)}


def oldest_run(r: Redis, keys: Keys) -> Optional[float]:
    """When the oldest run kept started (None: no run is kept): how far back history reaches."""
    first = r.zrange(keys.runs(), 0, 0, withscores=True)
    return float(first[0][1]) if first else None


def drop_unused_versions(r: Redis, keys: Keys, now: float) -> tuple[int, int]:
    """Drop the definitions versions last used before the oldest run kept started (so before any execution or run
    kept was created): nothing kept refers to them; and the statistics, history list and run index of each job that
    no version left records. Returns how many versions and jobs went."""
    oldest = oldest_run(r, keys)
    cutoff = min(now if oldest is None else oldest, now) - VERSION_MARGIN
    versions = [to_str(v) for v in r.zrangebyscore(keys.definitions_index(), "-inf", f"({cutoff}", start=0, num=100)]
    if not versions:
        return 0, 0
    stats = keys.job_stats("")
    gone, jobs = DROP_VERSIONS.bind(
        index=keys.definitions_index(), indexed_jobs=keys.runs_indexed_jobs(), cutoff=repr(cutoff),
        defs_prefix=keys.definitions(""), stats_prefix=stats, execs_suffix=keys.job_executions("")[len(stats):],
        by_job_prefix=keys.runs_by_job(""), versions=versions,
    ).run_borrowed(r)
    return int(gone), int(jobs)
