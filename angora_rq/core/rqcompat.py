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


def job_data(execution_id: str, prefix: str) -> bytes:
    """RQ's `data` field: pickle((func_name, instance, args, kwargs)) as DefaultSerializer writes it.

    Left uncompressed (RQ falls back to the raw bytes when zlib refuses them) and built from a per-prefix template,
    since pickling and compressing it cost ~17 us of every dispatch.
    """
    template = _templates.get(prefix)
    if template is None:
        template = _templates[prefix] = _pickle(_PLACEHOLDER, prefix)
    if len(execution_id) == len(_PLACEHOLDER) and execution_id.isascii():
        return template.replace(_PLACEHOLDER.encode(), execution_id.encode(), 1)
    return _pickle(execution_id, prefix)


def job_data_parts(prefix: str) -> tuple[bytes, bytes]:
    """`data` split around the execution id: head + id + tail == job_data(id, prefix) for a 32-character id."""
    job_data(_PLACEHOLDER, prefix)
    head, _, tail = _templates[prefix].partition(_PLACEHOLDER.encode())
    return head, tail


_PLACEHOLDER = "\x00" * 32  # execution ids are 32 hex characters; NUL never occurs in a prefix
_templates: dict[str, bytes] = {}


def _pickle(execution_id: str, prefix: str) -> bytes:
    payload: tuple = (JOB_FUNCTION, None, (execution_id, prefix), {})
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def job_mapping(
    execution_id: str,
    prefix: str,
    queue: str,
    description: str,
    timeout: float,
    result_ttl: float,
    now: float,
    status: str = RqStatus.queued,
) -> dict[str, Any]:
    """The fields of `rq:job:<id>` for a new execution (what Job.to_dict() gives for the same job)."""
    iso = utc_iso(now)
    return {
        RqJob.created_at: iso,
        RqJob.enqueued_at: iso,
        RqJob.data: job_data(execution_id, prefix),
        RqJob.success_callback_name: "",
        RqJob.failure_callback_name: "",
        RqJob.stopped_callback_name: "",
        RqJob.started_at: "",
        RqJob.ended_at: "",
        RqJob.last_heartbeat: "",
        RqJob.worker_name: "",
        RqJob.group_id: "",
        RqJob.origin: queue,
        RqJob.description: description,
        # RQ must never kill the command itself (it would orphan it): Angora's runner owns the timeout.
        RqJob.timeout: int(timeout) + 120,
        RqJob.result_ttl: int(result_ttl),
        RqJob.failure_ttl: int(result_ttl),
        RqJob.status: status,
    }
