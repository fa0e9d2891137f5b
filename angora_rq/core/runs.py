"""A run's overall status and each planned job's status, derived from what Redis holds (pure)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from angora_rq.core.schema import FAILED, FINAL, NOT_STARTED, Run, Status


PLAN_JSON = "plan"  # in a run's fields as the store reads them (store/queries.with_plans): the plan's JSON


def plan_of_hash(h: Mapping[str, str]) -> dict[str, Any]:
    """The plan of a run's hash as the store reads it (decoded, its plan's JSON found by its ref), or an empty
    one."""
    return json.loads(h[PLAN_JSON]) if h.get(PLAN_JSON) else {"jobs": [], "parents": {}, "depth": {}}


def summarize_hash(h: Mapping[str, str], plan: Mapping[str, Any] | None = None) -> "RunSummary":
    """`summarize` of a run's hash as Redis holds it (decoded); `plan` when already parsed."""
    plan = plan if plan is not None else plan_of_hash(h)
    statuses = {k[len(Run.job_status):]: v for k, v in h.items() if k.startswith(Run.job_status)}
    return summarize(plan["jobs"], plan.get("parents", {}), statuses, int(h.get(Run.active) or 0),
                     h.get(Run.canceled) == "1")


def is_terminal(status: str) -> bool:
    """True for a status that will not change by itself."""
    return status in FINAL


@dataclass(frozen=True)
class RunSummary:
    """Overall status, every job's status (planned ones included), and counts per status."""

    status: str
    jobs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    __hash__ = None  # type: ignore[assignment]


def summarize(plan_jobs: Sequence[str], plan_parents: Mapping[str, Sequence[str]], job_status: Mapping[str, str],
              active: int, canceled: bool = False) -> RunSummary:
    """Derive statuses: while anything is in flight the run is running; then failed, succeeded or canceled."""
    finished = active <= 0
    jobs: dict[str, str] = {}
    for name in plan_jobs:
        jobs[name] = job_status.get(name, "pending")
    for name, st in job_status.items():
        jobs.setdefault(name, st)
    if finished:
        for name in plan_jobs:
            if jobs[name] == "pending":
                jobs[name] = "upstream_failed" if _ancestor_failed(name, plan_parents, jobs) else "not_triggered"
    counts: dict[str, int] = {}
    for st in jobs.values():  # (a Counter costs more than the loop for a run's few jobs)
        counts[st] = counts.get(st, 0) + 1
    return RunSummary(_overall(jobs, finished, canceled), jobs, counts)


def _overall(jobs: Mapping[str, str], finished: bool, canceled: bool) -> str:
    if not finished:
        if canceled:
            return "canceling"
        started = [s for s in jobs.values() if s not in NOT_STARTED]
        return "running" if started else "queued"
    if canceled:
        return "canceled"
    if any(s in FAILED for s in jobs.values()):
        return "failed"
    return "succeeded"


def _ancestor_failed(name: str, parents: Mapping[str, Sequence[str]], jobs: Mapping[str, str]) -> bool:
    seen: set[str] = set()
    todo = list(parents.get(name, ()))
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        if jobs.get(p) in FAILED or jobs.get(p) == Status.canceled:
            return True
        todo.extend(parents.get(p, ()))
    return False
