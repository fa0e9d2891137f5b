"""What Angora keeps of finished work, and its trimming: whole finished runs, oldest first (never an active one).

Nothing of a run expires by itself (no TTLs): an execution waiting for days for its turn, a pause or its
backoff must still be there when its turn comes. The janitor drops finished runs with their executions once they
are older than `retention`, beyond `max_runs`, or while Redis holds more than the storage budget
(`ANGORA_MAX_MEMORY`); and the definitions versions no run or execution kept refers to any more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from angora_rq.core import keys as K
from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Status
from angora_rq.store.connection import Redis
from angora_rq.store.link import link_for
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
    ).run(link_for(r))
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


def oldest_run(r: Redis, keys: Keys) -> Optional[float]:
    """When the oldest run kept started (None: no run is kept): how far back history reaches."""
    first = r.zrange(keys.runs(), 0, 0, withscores=True)
    return float(first[0][1]) if first else None


def drop_unused_versions(r: Redis, keys: Keys, now: float) -> int:
    """Drop the definitions versions last used before the oldest run kept started (so before any execution or run
    kept was created): nothing kept refers to them. Returns how many went."""
    oldest = oldest_run(r, keys)
    cutoff = min(now if oldest is None else oldest, now) - VERSION_MARGIN
    versions = [to_str(v) for v in r.zrangebyscore(keys.definitions_index(), "-inf", f"({cutoff}", start=0, num=100)]
    if not versions:
        return 0
    return int(DROP_VERSIONS.bind(index=keys.definitions_index(), cutoff=repr(cutoff),
                                  defs_prefix=keys.definitions(""), versions=versions).run(link_for(r)))
