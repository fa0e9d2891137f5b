"""The JSON API under /api/v1, described by web/openapi.py (served at /api/v1/openapi.json)."""
from __future__ import annotations

import math
from typing import Any, Optional

from flask import Blueprint, g, jsonify, request

from angora_rq.core.errors import InvalidInput, NotFound
from angora_rq.core.messages import RUN_ID_RE
from angora_rq.store.pausing import paused_jobs
from angora_rq.store.queries import stats_view
from angora_rq.web.send import answer_send, json_object

bp = Blueprint("api", __name__)


@bp.after_request
def conditional(resp: Any) -> Any:
    """An ETag on every read: a page polling an unchanged run gets 304 and no body."""
    from angora_rq.web.context import revalidate

    return revalidate(resp)

MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
TAIL_MAX = 65536
RUN_FIELDS = frozenset({"params", "run_id"})
DECIDE_FIELDS = frozenset({"by"})


def _ext() -> Any:
    from angora_rq.web.context import angora

    return angora()


# -- query parameters ------------------------------------------------------------------------------------

def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter in [lo, hi] (InvalidInput otherwise)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be an integer", detail={name: raw[:80]}) from None
    if not lo <= value <= hi:
        raise InvalidInput(f"query parameter {name!r} must be between {lo} and {hi}", detail={name: value})
    return value


def flag_arg(name: str) -> bool:
    """A boolean query parameter: true/1 or false/0 (absent: false; InvalidInput otherwise)."""
    raw = request.args.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value not in ("true", "1", "false", "0"):
        raise InvalidInput(f"query parameter {name!r} must be true or false", detail={name: raw[:80]})
    return value in ("true", "1")


def time_arg(name: str) -> Optional[float]:
    """A unix-time query parameter (seconds, may be fractional), or None."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be a unix time in seconds",
                           detail={name: raw[:80]}) from None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"query parameter {name!r} must be a finite, non-negative unix time")
    return value


def text_arg(name: str, max_len: int = 200) -> Optional[str]:
    """A short text query parameter, or None when absent or empty."""
    raw = request.args.get(name)
    if raw is not None and len(raw) > max_len:
        raise InvalidInput(f"query parameter {name!r} is longer than {max_len} characters")
    return raw or None


def paging(default_limit: int = 50) -> tuple[int, int]:
    """(offset, limit) from the query string."""
    return int_arg("offset", 0, 0, MAX_OFFSET), int_arg("limit", default_limit, 1, MAX_LIMIT)


def valid_id(value: str, what: str) -> str:
    """A run or execution id as Angora makes them; anything else cannot exist (404)."""
    if not RUN_ID_RE.match(value):
        raise NotFound(f"no {what} {value[:80]!r}")
    return value


# -- jobs ----------------------------------------------------------------------------------------------

def job_summary(job: Any, stats: dict[str, Any], paused: bool = False) -> dict[str, Any]:
    """One line of the jobs list: the definition's main fields, whether it is paused, and its latest status."""
    return {
        "name": job.name,
        "description": job.description,
        "triggers": list(job.triggers),
        "messages": list(job.messages),
        "queue": job.queue,
        "parent_success": job.parent_success,
        "paused": paused,
        "stats": stats,
    }


@bp.get("/jobs")
def jobs() -> Any:
    """Every defined job with its latest status, last run and success rate."""
    ext = _ext()
    snap = ext.snapshot()
    stats = ext.queries.job_stats(j.name for j in snap.config.jobs)
    paused = paused_jobs(ext.r, ext.keys)
    items = [job_summary(j, stats[j.name], j.name in paused) for j in snap.config.jobs]
    return jsonify({"config_version": snap.version, "jobs": items})


@bp.get("/jobs/<name>")
def job(name: str) -> Any:
    """One job: its definition, parents and children, statistics, p50/p95 duration and success rate over its
    retained history, and recent executions (paged)."""
    ext = _ext()
    snap = ext.snapshot()
    spec = snap.config.job(name)
    if spec is None:
        raise NotFound(f"no job named {name[:80]!r}")
    offset, limit = paging(20)
    total, items = ext.queries.job_executions(name, offset, limit)
    graph = snap.graph
    return jsonify({
        "job": spec.to_json(),
        "parents": sorted(graph.parents(name)),
        "children": sorted(graph.children(name)),
        "failure_children": sorted(graph.failure_children(name)),
        "paused": bool(ext.r.sismember(ext.keys.paused_jobs(), name)),
        "stats": ext.queries.job_stats([name]).get(name, stats_view({})),
        "history": ext.queries.job_durations(name).to_json(),
        "executions": {"total": total, "offset": offset, "limit": limit, "items": items},
    })


@bp.post("/jobs/<name>/run")
def run_job(name: str) -> Any:
    """Run a job by hand now, with optional params and run id: 202 {run_id, execution_id}."""
    ext = _ext()
    body = json_object(RUN_FIELDS, required=False)
    run_id = body.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise InvalidInput("run_id must be a string")
    result = ext.control.run_job(ext.snapshot(), name, body.get("params"), run_id or None)
    return jsonify(result), 202


# -- runs ----------------------------------------------------------------------------------------------

@bp.get("/runs")
def runs() -> Any:
    """Runs, newest first, filtered by status, job and start time (since/until), paged."""
    offset, limit = paging(50)
    since, until = time_arg("since"), time_arg("until")  # since > until is an empty window, not an error
    total, items = _ext().queries.runs(offset, limit, status=text_arg("status", 64), job=text_arg("job"),
                                       since=since, until=until)
    return jsonify({"total": total, "offset": offset, "limit": limit, "runs": items})


@bp.get("/runs/<run_id>")
def run(run_id: str) -> Any:
    """One run: overall status, plan, every planned job's status (pending included) and its executions."""
    q = _ext().queries
    view = q.run(valid_id(run_id, "run"))
    view["executions"] = q.run_executions(run_id)
    return jsonify(view)


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> Any:
    """Start no further job of the run: its waiting executions are dropped now; running commands finish, or with
    `?kill=true` are killed."""
    kill = flag_arg("kill")
    return jsonify(_ext().control.cancel_run(valid_id(run_id, "run"), kill=kill))


@bp.post("/runs/<run_id>/rerun")
def rerun(run_id: str) -> Any:
    """A new run of the run's root message and params: 202 {run_id, rerun_of, ...}; with `?failed=true`, its
    failed, killed and canceled jobs again in the same run (once it has finished): 202 {run_id, executions}."""
    ext = _ext()
    failed = flag_arg("failed")
    rid = valid_id(run_id, "run")
    action = ext.control.rerun_failed if failed else ext.control.rerun
    return jsonify(action(ext.snapshot(), rid)), 202


# -- executions ----------------------------------------------------------------------------------------

@bp.get("/executions/<xid>")
def execution(xid: str) -> Any:
    """One execution with the last `tail` characters of its output (default and most: 65536)."""
    tail = int_arg("tail", TAIL_MAX, 0, TAIL_MAX)
    view = _ext().queries.execution(valid_id(xid, "execution"))
    text = view.get("tail") or ""
    view["tail"] = text[-tail:] if tail else ""
    view["tail_truncated"] = len(text) > tail
    return jsonify(view)


@bp.post("/executions/<xid>/kill")
def kill(xid: str) -> Any:
    """Kill a running execution (its process group) or drop a waiting one."""
    result = _ext().control.kill(valid_id(xid, "execution"))
    return jsonify({"execution_id": xid, "result": result})


@bp.post("/executions/<xid>/retry")
def retry(xid: str) -> Any:
    """Run a finished execution again as a new attempt: 202 {execution_id, retry_of}."""
    new = _ext().control.retry(valid_id(xid, "execution"))
    return jsonify({"execution_id": new, "retry_of": xid}), 202


def decider() -> str:
    """Who approves or rejects: the logged-in user (or `token`) when auth is on; else the body's `by`, or `web`."""
    body = json_object(DECIDE_FIELDS, required=False)
    user = g.get("angora_user")  # set by web/auth.authenticate before any view
    if user:
        return user
    by = body.get("by")
    if by is None or by == "":
        return "web"
    if not isinstance(by, str) or len(by) > 100 or any(ord(c) < 32 for c in by):
        raise InvalidInput("by must be a name of at most 100 printable characters")
    return by


@bp.post("/executions/<xid>/approve")
def approve(xid: str) -> Any:
    """Approve an execution awaiting approval: it is queued (409 when it is not awaiting approval)."""
    return jsonify(_ext().control.decide(valid_id(xid, "execution"), True, decider()))


@bp.post("/executions/<xid>/reject")
def reject(xid: str) -> Any:
    """Reject an execution awaiting approval: it ends `rejected` (409 when it is not awaiting approval)."""
    return jsonify(_ext().control.decide(valid_id(xid, "execution"), False, decider()))


@bp.post("/executions/<xid>/skip")
def skip(xid: str) -> Any:
    """Mark a failed execution succeeded (`skipped`) so its children proceed."""
    _ext().control.skip(valid_id(xid, "execution"))
    return jsonify({"execution_id": xid, "status": "skipped"})


# -- messages, graph, configuration, schema --------------------------------------------------------------

@bp.post("/messages")
def messages() -> Any:
    """Send a message (same as /send): 202 {run_id, message_id}."""
    return answer_send()


@bp.get("/graph")
def graph() -> Any:
    """The workflow graph of the definitions in force: nodes and edges, patterns resolved."""
    snap = _ext().snapshot()
    body = dict(snap.graph.to_json())
    body.setdefault("config_version", snap.version)
    return jsonify(body)


@bp.get("/config")
def config() -> Any:
    """The definitions loaded (version, files, warnings), the errors of the files as they are now, and the
    version the matchers run (they and this app read the same files the same way)."""
    return jsonify(_ext().config_status())


@bp.get("/openapi.json")
def openapi() -> Any:
    """This API's OpenAPI 3.1 document."""
    from angora_rq.web.openapi import document

    return jsonify(document(auth=_ext().settings.auth_enabled))
