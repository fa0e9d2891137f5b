"""Reads for the CLI and the web app: executions, runs, job statistics (bounded, index-driven, no scans)."""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional

import redis

from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core.errors import NotFound
from angora_rq.core import keys as K
from angora_rq.core.execution import UNVERSIONED, worker_host
from angora_rq.core.keys import Keys
from angora_rq.core.metrics import DurationStats, duration_stats, status_counts
from angora_rq.core.schema import Defs, Exec, JobStats, Run, Status
from angora_rq.core.settings import Settings
from angora_rq.store.plans import with_plans

LIST_FIELDS = ("id", "job", "run", "attempt", "status", "queue", "topic", "origin", "created", "started",
               "ended", "duration", "exit_code", "reason", "host", "worker", "next", "replay_of", "config_version")
NUMERIC = {"attempt": int, "created": float, "started": float, "ended": float, "duration": float, "exit_code": int}


def execution_view(xid: str, fields: dict[str, str], tail: Optional[str] = None,
                   spec: Optional[str] = None) -> dict[str, Any]:
    """An execution hash (decoded) as JSON-ready data: API names, numbers typed, params parsed; with `tail` (its
    hash's or its tail key's) the output and the spec (its JSON, '' when no longer known) too."""
    out: dict[str, Any] = {}
    for name in LIST_FIELDS:
        value = xid if name == "id" else fields.get(getattr(Exec, name), "")
        conv = NUMERIC.get(name)
        if conv and value not in ("", None):
            out[name] = conv(float(value)) if conv is int else conv(value)
        else:
            out[name] = value or None
    if out["host"] is None and out["worker"]:
        out["host"] = worker_host(out["worker"]) or None  # not stored when the worker's name says it
    if out["duration"] is None and out["started"] is not None and out["ended"] is not None:
        out["duration"] = max(0.0, out["ended"] - out["started"])  # not stored: ended - started
    if (out["config_version"] or "").startswith(UNVERSIONED):
        out["config_version"] = None  # created outside loaded definitions: the version is the spec's own
    out["params"] = json.loads(fields[Exec.params]) if fields.get(Exec.params) else {}
    if tail is not None:
        out["outputs"] = json.loads(fields[Exec.outputs]) if fields.get(Exec.outputs) else {}
        out["approval"] = fields.get(Exec.approval) or None
        out["decided_by"] = fields.get(Exec.decided_by) or None
        out["decided_at"] = float(fields[Exec.decided_at]) if fields.get(Exec.decided_at) else None
        deadline = fields.get(Exec.approval_deadline)
        out["approval_deadline"] = float(deadline) if deadline else None
        out["tail"] = fields.get(Exec.tail) or tail
        out["spec"] = json.loads(spec) if spec else None
        # An end its worker reported after someone else recorded or replayed it: refused, shown (fence.note_late).
        out["late"] = json.loads(fields[Exec.late]) if fields.get(Exec.late) else None
    return out


class Queries:
    """Read-only views over what Angora keeps in Redis."""

    def __init__(self, r: redis.Redis, keys: Keys, history: int = Settings.history) -> None:
        self.r = r
        self.keys = keys
        self.history = history  # executions kept per job: its history list may hold a few more (dispatch.lua)
        self._index: Any = None  # a RunIndex, made on the first filtered list

    def rq_queue_state(self, rq_name: str) -> tuple[bool, int]:
        """Whether RQ knows the queue named `rq_name` by RQ (its set of queues), and how many ids its list holds."""
        with self.r.pipeline(transaction=False) as p:
            p.sismember(K.RQ_QUEUES, K.rq_queue_named(rq_name))
            p.llen(K.rq_queue_named(rq_name))
            known, length = p.execute()
        return bool(known), int(length)

    def execution(self, xid: str) -> dict[str, Any]:
        """One execution with its output tail and its job's spec; NotFound if unknown or dropped."""
        with self.r.pipeline(transaction=False) as p:
            p.hgetall(self.keys.execution(xid))
            p.get(self.keys.tail(xid))
            raw, tail = p.execute()
        if not raw:
            raise NotFound(f"no execution {xid!r}")
        fields = to_str_dict(raw)
        spec = self.r.hget(self.keys.definitions(fields.get(Exec.config_version, "")),
                           Defs.job + fields.get(Exec.job, ""))
        return execution_view(xid, fields, to_str(tail), to_str(spec))

    def executions(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """Several executions in one round trip (dropped ones skipped)."""
        ids = list(ids)
        with self.r.pipeline(transaction=False) as p:
            for xid in ids:
                p.hgetall(self.keys.execution(xid))
            replies = p.execute()
        return [execution_view(xid, to_str_dict(raw)) for xid, raw in zip(ids, replies) if raw]

    def job_executions(self, job: str, offset: int = 0, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
        """A job's executions, newest first, and how many its history index holds (`history` at most)."""
        key = self.keys.job_executions(job)
        last = min(offset + limit, self.history) - 1
        with self.r.pipeline(transaction=False) as p:
            p.llen(key)
            p.lrange(key, offset, last)
            total, ids = p.execute()
        return min(int(total), self.history), self.executions(to_str(i) for i in ids) if last >= offset else []

    def job_durations(self, job: str) -> DurationStats:
        """p50/p95 duration and success rate over the job's retained history (`history` executions at most)."""
        ids = self.r.lrange(self.keys.job_executions(job), 0, self.history - 1)
        with self.r.pipeline(transaction=False) as p:
            for xid in ids:
                p.hmget(self.keys.execution(to_str(xid)), Exec.status, Exec.duration, Exec.started, Exec.ended)
            replies = p.execute()
        return duration_stats((to_str(st), to_str(d) or _elapsed(t0, t1))
                              for st, d, t0, t1 in replies if st is not None)

    def run_executions(self, run_id: str) -> list[dict[str, Any]]:
        """Every execution of a run (up to 1,000), oldest first."""
        ids = [f[len(Run.execution):] for f in map(to_str, self.r.hkeys(self.keys.run(run_id)))
               if f.startswith(Run.execution)]
        views = self.executions(ids[:1000])
        return sorted(views, key=lambda v: (v["created"] or 0.0, v["attempt"] or 0))

    def run_hash(self, run_id: str) -> dict[str, str]:
        """A run's hash (decoded) with its plan's JSON under PLAN_JSON; NotFound if unknown or dropped."""
        raw = self.r.hgetall(self.keys.run(run_id))
        if not raw:
            raise NotFound(f"no run {run_id!r}")
        return with_plans(self.r, self.keys, [to_str_dict(raw)])[0]

    def run(self, run_id: str) -> dict[str, Any]:
        """A run with its plan, every planned job's status (pending included) and its overall status."""
        return run_view(run_id, self.run_hash(run_id))

    def runs(self, offset: int = 0, limit: int = 50, status: Optional[str] = None, job: Optional[str] = None,
             since: Optional[float] = None, until: Optional[float] = None) -> tuple[int, list[dict[str, Any]]]:
        """Runs newest first, and how many match; filters read the run indexes (store/runindex.py), not pages."""
        from angora_rq.store.runindex import RunIndex, Window

        window = Window(offset, limit, since, until)
        if status is None and job is None:
            key = self.keys.runs()
            with self.r.pipeline(transaction=False) as p:
                p.zcount(key, window.lo, window.hi)
                p.zrevrangebyscore(key, window.hi, window.lo, start=offset, num=limit)
                total, raw_ids = p.execute()
            ids = [to_str(i) for i in raw_ids]
        else:
            if self._index is None:
                self._index = RunIndex(self.r, self.keys)
            total, ids = self._index.page(window, status, job)
        with self.r.pipeline(transaction=False) as p:
            for rid in ids:
                p.hgetall(self.keys.run(rid))
            raws = p.execute()
        found = [(rid, to_str_dict(raw)) for rid, raw in zip(ids, raws) if raw]
        return int(total), [run_view(rid, h) for (rid, _), h in zip(found, with_plans(self.r, self.keys,
                                                                                         [h for _, h in found]))]

    def job_stats(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Latest status and counters of several jobs in one round trip."""
        names = list(names)
        with self.r.pipeline(transaction=False) as p:
            for n in names:
                p.hgetall(self.keys.job_stats(n))
            replies = p.execute()
        return {n: stats_view(to_str_dict(raw)) for n, raw in zip(names, replies)}


def _elapsed(started: Any, ended: Any) -> str:
    """An execution's duration from its start and end times ('' when it has not both)."""
    return f"{max(0.0, float(ended) - float(started)):.6f}" if started and ended else ""


def stats_view(f: dict[str, str]) -> dict[str, Any]:
    """Job stats as JSON-ready data, with a success rate (commands that ended: failed counts every failure)."""
    counts = status_counts(f)
    ok = counts.get(Status.succeeded, 0)
    bad = sum(counts.values()) - ok
    return {
        "last_status": f.get(JobStats.last_status) or None,
        "last_execution": f.get(JobStats.last_execution) or None,
        "last_run": f.get(JobStats.last_run) or None,
        "last_started": float(f[JobStats.last_started]) if f.get(JobStats.last_started) else None,
        "last_ended": float(f[JobStats.last_ended]) if f.get(JobStats.last_ended) else None,
        "last_duration": float(f[JobStats.last_duration]) if f.get(JobStats.last_duration) else None,
        "succeeded": ok,
        "failed": bad,
        "total": ok + bad,
        "success_rate": (ok / (ok + bad)) if ok + bad else None,
    }


def run_view(run_id: str, h: dict[str, str]) -> dict[str, Any]:
    """A run hash (with its plan's JSON under PLAN_JSON) as JSON-ready data, statuses derived by runs.summarize."""
    from angora_rq.core.runs import plan_of_hash, summarize_hash

    plan = plan_of_hash(h)
    counts: dict[str, int] = {}
    for k, v in h.items():
        if k.startswith(Run.execution):
            counts[v] = counts.get(v, 0) + 1
    active = int(h.get(Run.active) or 0)
    summary = summarize_hash(h, plan)
    jobs = {
        name: {
            "status": st,
            "execution": h.get(Run.job_execution + name) or None,
            "executions": counts.get(name, 0),
        }
        for name, st in summary.jobs.items()
    }
    version = h.get(Run.config_version) or None
    created = float(h[Run.created]) if h.get(Run.created) else None
    # The end time counts once nothing is in flight (a run running again keeps its last one until it ends again);
    # a run recorded before runs had one has none.
    ended = float(h[Run.ended]) if active <= 0 and h.get(Run.ended) else None
    return {
        "run_id": run_id,
        "status": summary.status,
        "topic": h.get(Run.topic),
        "origin": h.get(Run.origin),
        "created": created,
        "ended": ended,
        "duration": max(0.0, ended - created) if ended is not None and created is not None else None,
        "params": json.loads(h[Run.params]) if h.get(Run.params) else {},
        "config_version": None if version == UNVERSIONED else version,
        "active": active,
        "canceled": h.get(Run.canceled) == "1",
        "rerun_of": h.get(Run.rerun_of) or None,
        "plan": plan,
        "jobs": jobs,
        "counts": summary.counts,
    }
