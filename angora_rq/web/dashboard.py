"""rq-dashboard mounted at /rq on the same app, behind the same authentication, CSRF and Origin checks.

ANGORA_RQ_DASHBOARD says what it may do: `readonly` (the default: its pages and data, every action refused),
`full` (its actions too, except those that cannot work with Angora) or `off` (not mounted). In every mode:
- no action through GET (rq-dashboard accepts `GET /rq/requeue/<queue>`): 405;
- requeue is refused (409): an RQ job put back on its queue is never run by Angora's workers, which take their
  executions through Angora's own state; `POST /api/v1/executions/<id>/retry` is the way (the RQ job id is the
  execution id);
- delete and empty are disabled (RQ_DASHBOARD_DISABLE_DELETE): deleting an execution's RQ job behind Angora's back
  would leave its run waiting; kill or skip it instead.
Its buttons send the session's CSRF token through templates/rq_dashboard/base.html (our copy of its layout,
which also gives its inline script the page's CSP nonce).
"""
from __future__ import annotations

from typing import Any

from flask import Flask, request

from angora_rq.core.errors import Conflict, Forbidden, NotFound
from angora_rq.core.settings import Settings

URL_PREFIX = "/rq"
ACTIONS = frozenset({"rq_dashboard.delete_job_view", "rq_dashboard.requeue_job_view", "rq_dashboard.requeue_all",
                     "rq_dashboard.empty_queue", "rq_dashboard.compact_queue"})
REQUEUES = frozenset({"rq_dashboard.requeue_job_view", "rq_dashboard.requeue_all"})
MAX_NAME = 200


def init_app(app: Flask, settings: Settings) -> None:
    """Register rq-dashboard's blueprint on Angora's Redis (unless it is off); no connection is made here."""
    if settings.rq_dashboard == "off":
        return
    import rq_dashboard  # needs `six` (facts.md)

    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", settings.effective_redis_url)
    app.config.setdefault("RQ_DASHBOARD_DISABLE_DELETE", True)
    app.extensions["angora_rq_dashboard"] = settings.rq_dashboard
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)  # required, else every page fails
    app.before_request(guard_dashboard)


def guard_dashboard() -> Any:
    """before_request: what rq-dashboard may do in this mode, and only with names that can exist."""
    if request.blueprint != "rq_dashboard":
        return None
    args = request.view_args or {}
    if args.get("instance_number", 0) != 0:
        raise NotFound("rq-dashboard instance not found: Angora has one Redis (instance 0)")
    if any(isinstance(v, str) and not _plausible(v) for v in args.values()):
        raise NotFound("no such queue, registry or job")
    if request.endpoint not in ACTIONS:
        return None
    if request.method != "POST":
        from werkzeug.exceptions import MethodNotAllowed

        raise MethodNotAllowed(valid_methods=["POST"], description="rq-dashboard's actions are POST only")
    if request.endpoint in REQUEUES:
        raise Conflict("requeue from rq-dashboard is refused: Angora's workers would never run the job",
                       detail="retry the execution instead: POST /api/v1/executions/<execution id>/retry")
    if _mode() != "full":
        raise Forbidden("rq-dashboard is read-only here (ANGORA_RQ_DASHBOARD=readonly)")
    return None


def _mode() -> str:
    from flask import current_app

    return str(current_app.extensions.get("angora_rq_dashboard", "readonly"))


def _plausible(name: str) -> bool:
    """A queue, registry or job name RQ could have made: printable, short, valid Unicode."""
    if not name or len(name) > MAX_NAME or not name.isprintable():
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
