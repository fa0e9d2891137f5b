"""Counting executions and their durations (pure): histogram buckets, a job's stats fields read back, and the
p50/p95 duration and success rate of a job's retained history.

A job's stats hash (`Keys.job_stats`) counts each command that ended in a field `h:<status>:<bound>` (its final
status and the smallest bucket bound its duration fits under) and sums durations in `d:<status>` (schema.JobStats):
the two commands FINISH ran before (succeeded-or-failed, total) became these two, so /metrics gets per-status
counters and duration histograms with no extra command per execution, and every count stays exact across
processes and hosts (Redis holds it, not a process).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from angora_rq.core.codec import to_str
from angora_rq.core.schema import JobStats, Status

ALIVE_SECONDS = 15.0  # a process whose heartbeat (Keys.heartbeats) is older is not counted alive

# Upper bounds (seconds) of the duration buckets: Prometheus' `le`. The last bucket is +Inf.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
INF = "+Inf"


def bucket_bound(duration: float) -> str:
    """The `le` of the smallest bucket a duration fits in, as stored: repr of the bound, or +Inf."""
    for bound in DURATION_BUCKETS:
        if duration <= bound:
            return repr(bound)
    return INF


@dataclass
class Histogram:
    """Commands of one job that ended with one status: count per bucket bound (not cumulative), durations' sum."""

    buckets: dict[str, int] = field(default_factory=dict)
    total_seconds: float = 0.0

    @property
    def count(self) -> int:
        """Commands counted."""
        return sum(self.buckets.values())

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, commands at or under it) for every bound, ending with +Inf (what Prometheus exposes)."""
        bounds = sorted({*map(repr, DURATION_BUCKETS), *(b for b in self.buckets if b != INF)}, key=float)
        out, running = [], 0
        for b in bounds:
            running += self.buckets.get(b, 0)
            out.append((b, running))
        out.append((INF, self.count))
        return out


def histograms(stats: Mapping[str, str]) -> dict[str, Histogram]:
    """A job's stats hash (decoded) as one Histogram per final status."""
    out: dict[str, Histogram] = {}
    for name, value in stats.items():
        if name.startswith(JobStats.count):
            status, _, bound = name[len(JobStats.count):].rpartition(":")
            if status and bound:
                out.setdefault(status, Histogram()).buckets[bound] = int(value or 0)
        elif name.startswith(JobStats.seconds):
            out.setdefault(name[len(JobStats.seconds):], Histogram()).total_seconds = float(value or 0)
    return out


def status_counts(stats: Mapping[str, str]) -> dict[str, int]:
    """Commands that ended, per final status (counts kept before histograms were, as succeeded/failed, included)."""
    counts = {status: h.count for status, h in histograms(stats).items()}
    for status, name in ((Status.succeeded, JobStats.succeeded), (Status.failed, JobStats.failed)):
        if stats.get(name):
            counts[status] = counts.get(status, 0) + int(stats[name])
    return counts


@dataclass(frozen=True)
class DurationStats:
    """A job's retained history summed up: executions kept, those finished, and of these the successes."""

    executions: int
    finished: int
    succeeded: int
    p50: Optional[float]
    p95: Optional[float]

    @property
    def success_rate(self) -> Optional[float]:
        """Succeeded / finished (None when nothing finished)."""
        return self.succeeded / self.finished if self.finished else None

    def to_json(self) -> dict[str, object]:
        """As the API shows it."""
        return {"executions": self.executions, "finished": self.finished, "succeeded": self.succeeded,
                "success_rate": self.success_rate, "p50": self.p50, "p95": self.p95}


def percentile(sorted_values: list[float], p: float) -> Optional[float]:
    """The nearest-rank p-th percentile (0 < p <= 100) of ascending values; None for none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def duration_stats(rows: Iterable[tuple[str, str]]) -> DurationStats:
    """(status, duration) of each retained execution -> p50/p95 of the finished ones' durations and success rate.

    Finished: the command ran and ended (it has a duration), whatever its status became (a failure marked
    `skipped` by a user still failed). Executions waiting, running, or dropped before they ran are not finished.
    """
    durations: list[float] = []
    total = succeeded = 0
    for status, duration in rows:
        total += 1
        if duration in ("", None):
            continue
        durations.append(float(duration))
        succeeded += status == Status.succeeded
    durations.sort()
    return DurationStats(total, len(durations), succeeded, percentile(durations, 50), percentile(durations, 95))


def alive_by_role(beats: Mapping[Any, Any], now: float, within: float = ALIVE_SECONDS) -> dict[str, int]:
    """Heartbeat hash fields `<role>:<name>` -> unix time, as processes that beat within `within` s, per role."""
    out: dict[str, int] = {}
    for name, value in beats.items():
        role, _, who = to_str(name).partition(":")
        try:
            fresh = now - float(to_str(value)) < within
        except ValueError:
            continue
        if who:
            out[role] = out.get(role, 0) + fresh
    return out


def entry_age(entry_id: Optional[str], now: float) -> float:
    """Seconds since a stream entry was added (its id starts with the server's time in ms); 0 for none."""
    if not entry_id:
        return 0.0
    return max(0.0, now - int(entry_id.partition("-")[0]) / 1000)
