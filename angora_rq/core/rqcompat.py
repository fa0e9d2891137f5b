"""RQ's job hash, written the way RQ writes it, so rq-dashboard and stock RQ see Angora's executions as RQ jobs."""
from __future__ import annotations

import pickle
from datetime import datetime, timezone
from typing import Any

from angora_rq.core.schema import RqJob, RqStatus

# The job function RQ records for every execution; `rq worker` can run it too (slow path).
JOB_FUNCTION = "angora_rq.processes.worker.run_execution"


def utc_iso(ts: float) -> str:
    """Time as RQ formats it (rq.utils.utcformat)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_data() -> bytes:
    """RQ's `data` field: pickle((func_name, instance, args, kwargs)) as DefaultSerializer writes it, the same for
    every execution: the function finds its execution by its RQ job's id and the prefix in ANGORA_PREFIX.

    62 bytes, under Redis's hash-max-ziplist-value (64), so the RQ job hash stays compact (with the execution id
    and the prefix as arguments it was 107 bytes, and the hash a hashtable about six times its size). Left
    uncompressed: RQ falls back to the raw bytes when zlib refuses them.
    """
    return _DATA


_DATA = pickle.dumps((JOB_FUNCTION, None, (), {}), protocol=pickle.HIGHEST_PROTOCOL)
DESCRIPTION_MAX = 64  # hash-max-ziplist-value


def description(job: str, run_id: str, attempt: int) -> str:
    """What rq-dashboard lists for an execution, cut to DESCRIPTION_MAX characters (see job_data)."""
    return f"{job} (run {run_id}, attempt {attempt})"[:DESCRIPTION_MAX]


def job_mapping(queue: str, description: str, timeout: float, now: float,
                status: str = RqStatus.queued) -> dict[str, Any]:
    """The fields of `rq:job:<id>` for a new execution: only those RQ and rq-dashboard read that have a value
    (Job.restore needs `data` alone; every other field falls back to RQ's default when absent)."""
    return {
        RqJob.created_at: utc_iso(now),
        RqJob.data: _DATA,
        RqJob.origin: queue,
        RqJob.description: description,
        # RQ must never kill the command itself (it would orphan it): Angora's runner owns the timeout.
        RqJob.timeout: int(timeout) + 120,
        RqJob.status: status,
    }
