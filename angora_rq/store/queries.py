"""Reads for the CLI and the web app: executions, runs, job statistics (bounded, index-driven, no scans)."""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional

import redis

from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core.errors import NotFound
from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.metrics import DurationStats, duration_stats, status_counts
from angora_rq.core.schema import Exec, Run, Status

LIST_FIELDS = ("id", "job", "run", "attempt", "status", "queue", "topic", "origin", "created", "started",
               "ended", "duration", "exit_code", "reason", "host", "worker", "next", "replay_of", "config_version")
NUMERIC = {"attempt": int, "created": float, "started": float, "ended": float, "duration": float, "exit_code": int}


def execution_view(fields: dict[str, str], with_tail: bool = True) -> dict[str, Any]:
    """An execution hash as JSON-ready data (numbers typed, params and spec parsed)."""
    out: dict[str, Any] = {}
    for name in LIST_FIELDS:
        value = fields.get(name, "")
        conv = NUMERIC.get(name)
        if conv and value not in ("", None):
            out[name] = conv(float(value)) if conv is int else conv(value)
        else:
            out[name] = value or None
    out["params"] = json.loads(fields["params"]) if fields.get("params") else {}
    if with_tail:
        out["outputs"] = json.loads(fields["outputs"]) if fields.get("outputs") else {}
        out["approval"] = fields.get("approval") or None
        out["decided_by"] = fields.get("decided_by") or None
        out["decided_at"] = float(fields["decided_at"]) if fields.get("decided_at") else None
        out["approval_deadline"] = float(fields["approval_deadline"]) if fields.get("approval_deadline") else None
        out["tail"] = fields.get("tail", "")
        out["spec"] = json.loads(fields["spec"]) if fields.get("spec") else None
        # An end its worker reported after someone else recorded or replayed it: refused, shown (fence.note_late).
        out["late"] = json.loads(fields["late"]) if fields.get("late") else None
    return out


class Queries:
    """Read-only views over what Angora keeps in Redis."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._index: Any = None  # a RunIndex, made on the first filtered list

    def rq_queue_state(self, rq_name: str) -> tuple[bool, int]:
        """Whether RQ knows the queue named `rq_name` by RQ (its set of queues), and how many ids its list holds."""
        with self.r.pipeline(transaction=False) as p:
            p.sismember(K.RQ_QUEUES, K.rq_queue_named(rq_name))
            p.llen(K.rq_queue_named(rq_name))
            known, length = p.execute()
        return bool(known), int(length)

    def execution(self, xid: str) -> dict[str, Any]:
        """One execution with its output tail; NotFound if unknown or expired."""
        raw = self.r.hgetall(self.keys.execution(xid))
        if not raw:
            raise NotFound(f"no execution {xid!r}")
        return execution_view(to_str_dict(raw))

    def executions(self, ids: Iterable[str], with_tail: bool = False) -> list[dict[str, Any]]:
        """Several executions in one round trip (expired ones skipped)."""
        ids = list(ids)
        with self.r.pipeline(transaction=False) as p:
            for xid in ids:
                if with_tail:
                    p.hgetall(self.keys.execution(xid))
                else:
                    p.hmget(self.keys.execution(xid), *LIST_FIELDS, "params")
            replies = p.execute()
        out = []
        for reply in replies:
            fields = to_str_dict(reply) if with_tail else dict(zip((*LIST_FIELDS, "params"), map(to_str, reply)))
            if fields.get("id"):
                out.append(execution_view(fields, with_tail))
        return out

    def job_executions(self, job: str, offset: int = 0, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
        """A job's executions, newest first, and how many are kept."""
        key = self.keys.job_executions(job)
        with self.r.pipeline(transaction=False) as p:
            p.zcard(key)
            p.zrevrange(key, offset, offset + limit - 1)
            total, ids = p.execute()
        return int(total), self.executions(to_str(i) for i in ids)

    def job_durations(self, job: str) -> DurationStats:
        """p50/p95 duration and success rate over the job's retained history (`history` executions at most)."""
        ids = self.r.zrange(self.keys.job_executions(job), 0, -1)
        with self.r.pipeline(transaction=False) as p:
            for xid in ids:
                p.hmget(self.keys.execution(to_str(xid)), Exec.status, Exec.duration)
            replies = p.execute()
        return duration_stats((to_str(st), to_str(d)) for st, d in replies if st is not None)

    def run_executions(self, run_id: str) -> list[dict[str, Any]]:
        """Every execution of a run, oldest first."""
        ids = self.r.zrange(self.keys.run_executions(run_id), 0, 999)
        return self.executions(to_str(i) for i in ids)

    def run_hash(self, run_id: str) -> dict[str, str]:
        """A run's raw hash; NotFound if unknown or expired."""
        raw = self.r.hgetall(self.keys.run(run_id))
        if not raw:
            raise NotFound(f"no run {run_id!r}")
        return to_str_dict(raw)

    def run(self, run_id: str) -> dict[str, Any]:
        """A run with its plan, every planned job's status (pending included) and its overall status."""
        return run_view(self.run_hash(run_id))

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
        return int(total), [run_view(to_str_dict(raw)) for raw in raws if raw]

    def job_stats(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Latest status and counters of several jobs in one round trip."""
        names = list(names)
        with self.r.pipeline(transaction=False) as p:
            for n in names:
                p.hgetall(self.keys.job_stats(n))
            replies = p.execute()
        return {n: stats_view(to_str_dict(raw)) for n, raw in zip(names, replies)}


def stats_view(f: dict[str, str]) -> dict[str, Any]:
    """Job stats as JSON-ready data, with a success rate (commands that ended: failed counts every failure)."""
    counts = status_counts(f)
    ok = counts.get(Status.succeeded, 0)
    bad = sum(counts.values()) - ok
    return {
        "last_status": f.get("last_status") or None,
        "last_execution": f.get("last_execution") or None,
        "last_run": f.get("last_run") or None,
        "last_started": float(f["last_started"]) if f.get("last_started") else None,
        "last_ended": float(f["last_ended"]) if f.get("last_ended") else None,
        "last_duration": float(f["last_duration"]) if f.get("last_duration") else None,
        "succeeded": ok,
        "failed": bad,
        "total": ok + bad,
        "success_rate": (ok / (ok + bad)) if ok + bad else None,
    }


def run_view(h: dict[str, str]) -> dict[str, Any]:
    """A run hash as JSON-ready data, with statuses derived by runs.summarize."""
    from angora_rq.core.runs import plan_of_hash, summarize_hash

    plan = plan_of_hash(h)
    active = int(h.get("active") or 0)
    summary = summarize_hash(h, plan)
    jobs = {
        name: {
            "status": st,
            "execution": h.get(f"e:{name}") or None,
            "executions": int(h.get(f"n:{name}") or 0),
        }
        for name, st in summary.jobs.items()
    }
    return {
        "run_id": h.get("run_id"),
        "status": summary.status,
        "topic": h.get("topic"),
        "origin": h.get("origin"),
        "created": float(h["created"]) if h.get("created") else None,
        "params": json.loads(h["params"]) if h.get("params") else {},
        "config_version": h.get("config_version") or None,
        "active": active,
        "canceled": h.get("canceled") == "1",
        "rerun_of": h.get(Run.rerun_of) or None,
        "plan": plan,
        "jobs": jobs,
        "counts": summary.counts,
    }
