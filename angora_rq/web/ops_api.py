"""Operations under /api/v1: the budgets, schedules, dead letters, pause and resume (jobs and queues),
reload of the definitions.

Same conventions as web/api.py: auth and CSRF are checked app-wide before any view runs; errors are AngoraError
subclasses, turned into `{"error", "detail"}` by the app's handlers.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from flask import Blueprint, jsonify

from angora_rq.store import pausing
from angora_rq.core.errors import NotFound
from angora_rq.store.deadletters import KEPT, read_dead_letters, resend
from angora_rq.store.reloads import request_reload
from angora_rq.store.schedules import leader_status, schedule_status
from angora_rq.store.webhooks import deliveries

bp = Blueprint("ops_api", __name__)
MAX_NAME = 200


def _ext() -> Any:
    from angora_rq.web.context import angora

    return angora()


def _name(name: str, what: str) -> str:
    """A job name from the path; one that could not name anything is simply not found."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise NotFound(f"no {what} with that name") from None
    if len(name) > MAX_NAME:
        raise NotFound(f"no {what} named {name[:80]!r}")
    return name


def _defined_jobs() -> Optional[set[str]]:
    """Names of the defined jobs, or None when no valid definitions were ever loaded."""
    ext = _ext()
    ext.definitions.refresh()
    source = ext.source
    return None if source is None else set(source.current().config.by_name)


# -- backpressure ------------------------------------------------------------------------------------------

@bp.get("/status")
def status() -> Any:
    """How much of each budget is used: accepted work not finished, and Redis' memory (core/pressure.py)."""
    return jsonify(_ext().pressure.usage())


# -- schedules ---------------------------------------------------------------------------------------------

@bp.get("/schedules")
def schedules() -> Any:
    """Every schedule with its next fire time and last tick sent, and which scheduler leads."""
    ext = _ext()
    snap = ext.snapshot()
    return jsonify({
        "config_version": snap.version,
        "leader": leader_status(ext.r, ext.keys),
        "schedules": schedule_status(ext.r, ext.keys, snap, time.time()),
    })


@bp.get("/webhooks")
def webhooks() -> Any:
    """Every webhook of the definitions in force (the secret never shown) with its latest delivery attempts."""
    ext = _ext()
    snap = ext.snapshot()
    return jsonify({"config_version": snap.version, "webhooks": deliveries(ext.r, ext.keys, snap.config.webhooks)})


@bp.get("/dead-letters")
def dead_letters() -> Any:
    """The messages the matchers put aside as dead letters (newest first), and how many in all."""
    ext = _ext()
    records, total = read_dead_letters(ext.r, ext.keys)
    return jsonify({"total": total, "kept": KEPT, "dead_letters": records})


@bp.post("/dead-letters/<entry>/resend")
def resend_dead_letter(entry: str) -> Any:
    """Send a dead letter's message again, in a new run, and take it off the list: 202 {run_id, message_id,
    replayed} (replayed: it had been sent again already; nothing was sent)."""
    ext = _ext()
    sent = resend(ext.r, ext.keys, entry[:200], ext.pressure.budget())
    return jsonify({"run_id": sent.run_id, "message_id": sent.message_id, "replayed": sent.replayed}), 202


# -- pause and resume --------------------------------------------------------------------------------------

@bp.post("/jobs/<name>/pause")
def pause_job(name: str) -> Any:
    """Hold the executions of a job its messages trigger from now on (running ones go on)."""
    ext = _ext()
    job = pausing.check_job(_name(name, "job"), _defined_jobs())
    return jsonify(pausing.pause_job(ext.r, ext.keys, job))


@bp.post("/jobs/<name>/resume")
def resume_job(name: str) -> Any:
    """Resume a job: what it held is queued, in order. Works for a job since removed from the definitions."""
    ext = _ext()
    job = _name(name, "job")
    defined = _defined_jobs()
    if defined is not None and job not in defined and not ext.r.sismember(ext.keys.paused_jobs(), job):
        raise NotFound(f"no job named {job[:80]!r}")
    return jsonify(pausing.resume_job(ext.r, ext.keys, job))


@bp.post("/queues/<queue>/pause")
def pause_queue(queue: str) -> Any:
    """Workers stop taking executions from the queue (running ones go on)."""
    ext = _ext()
    return jsonify(pausing.pause_queue(ext.r, ext.keys, queue))


@bp.post("/queues/<queue>/resume")
def resume_queue(queue: str) -> Any:
    """Workers take executions from the queue again."""
    ext = _ext()
    return jsonify(pausing.resume_queue(ext.r, ext.keys, queue))


@bp.get("/paused")
def paused() -> Any:
    """Paused jobs (with the executions each holds) and paused queues (with the executions waiting in each)."""
    ext = _ext()
    return jsonify(pausing.paused(ext.r, ext.keys))


# -- definitions -------------------------------------------------------------------------------------------

@bp.post("/config/reload")
def reload_config() -> Any:
    """Ask every process (all hosts) to read its definition files again; this one does it now.

    Broken files never replace good definitions: `config.valid` is false and `config.errors` says why.
    """
    ext = _ext()
    n = request_reload(ext.r, ext.keys)
    ext.definitions.refresh(force=True)
    return jsonify({"requested": n, "config": ext.config_status()})
