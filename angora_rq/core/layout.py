"""Versions of the Redis layout, and the conversion of records of the previous one (pure: store/migrate.py acts).

Layout 1 is every release before the compact records (up to and including 1f8439b and the releases that followed
it with budgets and run indexes): hash fields named in full (`status`, `created`...), the job's spec copied into
each execution, run plans as JSON in each run, TTLs on records, a zset per run of its executions and per job of
its history, a dedupe key per dispatch, RQ job records with the execution id and prefix as arguments. It wrote no
version. Layout 2 (this one) records its number in `Keys.schema`.
"""
from __future__ import annotations

from typing import Optional

from angora_rq.core.execution import UNVERSIONED, spec_version
from angora_rq.core.plans import plan_ref
from angora_rq.core.rqcompat import DESCRIPTION_MAX, job_data
from angora_rq.core.schema import SUCCEEDED, Exec, JobStats, RqJob, Run

LAYOUT = 2
PREVIOUS = 1
TAIL_INLINE = 64  # bytes; store/state.py keeps the same bound
# The RQ fields a layout-2 RQ job keeps (rqcompat.job_mapping, and what CLAIM and FINISH add).
RQ_KEPT = (RqJob.created_at, RqJob.origin, RqJob.description, RqJob.status, RqJob.timeout, RqJob.started_at,
           RqJob.worker_name, RqJob.ended_at)


def is_old_execution(fields: dict[str, str]) -> bool:
    """Whether an execution hash is in layout 1 (its fields named in full)."""
    return "status" in fields or "spec" in fields


def execution(fields: dict[str, str]) -> tuple[dict[str, str], str, str, str]:
    """A layout-1 execution hash as (layout-2 fields, its spec's JSON, the version the spec is recorded under,
    its output tail when too long for the hash, else '')."""
    spec = fields.get("spec", "")
    version = spec_version(fields.get("config_version", ""), spec)
    tail = fields.get("tail", "")
    long_tail = tail if len(tail.encode()) > TAIL_INLINE else ""
    out: dict[str, str] = {}
    for name, short in Exec.fields().items():
        value = fields.get(name, "")
        if name == "config_version":
            value = version
        elif name == "tail" and long_tail:
            value = ""
        elif (name, value) in (("params", "{}"), ("limit", "0")):
            value = ""
        if value != "":
            out[short] = value
    return out, spec, version, long_tail


def is_old_run(fields: dict[str, str]) -> bool:
    """Whether a run hash is in layout 1."""
    return "created" in fields or "run_id" in fields or "active" in fields or "plan" in fields


def run(fields: dict[str, str]) -> tuple[dict[str, str], str, str]:
    """A layout-1 run hash as (layout-2 fields but its executions and joins, its plan's JSON, the version the plan
    is recorded under); per-job execution counts (`n:<job>`) go: they are counted from the executions now."""
    plan = fields.get("plan", "")
    version = fields.get("config_version", "") or UNVERSIONED
    out: dict[str, str] = {}
    for name, short in Run.fields().items():
        if short.endswith(":"):
            continue  # per-job and per-execution fields: below
        value = fields.get(name, "")
        if name == "plan":
            value = plan_ref(plan) if plan else ""
        elif name == "config_version":
            value = version if plan else fields.get(name, "")
        elif name == "params" and value == "{}":
            value = ""
        if value != "":
            out[short] = value
    for name, value in fields.items():
        if name.startswith((Run.job_status, Run.job_execution)):
            out[name] = value
    return out, plan, version


def job_stats(fields: dict[str, str]) -> Optional[dict[str, str]]:
    """A layout-1 job statistics hash in layout 2 (None if it is already): the last_* fields renamed."""
    renamed = {name: short for name, short in JobStats.fields().items() if name != short}
    if not any(name in fields for name in renamed):
        return None
    return {renamed.get(name, name): value for name, value in fields.items()}


def rq_job(fields: dict[str, str], rq_queue_name: str) -> dict[str, str]:
    """What a layout-2 RQ job keeps of a layout-1 one (no empty field, the one `data`, the queue's RQ name)."""
    out = {name: fields[name] for name in RQ_KEPT if fields.get(name)}
    out[RqJob.data] = job_data()  # type: ignore[assignment]  # bytes: Redis takes them as they are
    out[RqJob.origin] = rq_queue_name
    if RqJob.description in out:
        out[RqJob.description] = out[RqJob.description][:DESCRIPTION_MAX]
    return out


def finished_ok(exec_fields: dict[str, str]) -> bool:
    """Whether a (layout-1) execution has succeeded: its RQ job goes, as FINISH drops it now."""
    return exec_fields.get("status", "") in SUCCEEDED
