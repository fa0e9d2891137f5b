"""rq-dashboard mounted at /rq on the same app, behind the same authentication, CSRF and Origin checks.

ANGORA_RQ_DASHBOARD says what it may do: `readonly` (the default: its pages and data, every action refused),
`full` (its actions too, except those that cannot work with Angora) or `off` (not mounted). In every mode:
- no action through GET (rq-dashboard accepts `GET /rq/requeue/<queue>`): 405;
- requeue is refused (409): an RQ job put back on its queue is never run by Angora's workers, which take their
  executions through Angora's own state; `POST /api/v1/executions/<id>/retry` is the way (the RQ job id is the
  execution id);
- delete and empty are refused (403; RQ_DASHBOARD_DISABLE_DELETE too): deleting an execution's RQ job behind
  Angora's back would leave its run waiting; kill or skip it instead.
Its buttons send the session's CSRF token through templates/rq_dashboard/base.html (our copy of its layout,
which also gives its inline script the page's CSP nonce).
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, request

from angora_rq.core.errors import Conflict, Forbidden, NotFound
from angora_rq.core.settings import SENTINEL_SCHEME, Settings, parse_sentinel_url

URL_PREFIX = "/rq"
ACTIONS = frozenset({"rq_dashboard.delete_job_view", "rq_dashboard.requeue_job_view", "rq_dashboard.requeue_all",
                     "rq_dashboard.empty_queue", "rq_dashboard.compact_queue"})
REQUEUES = frozenset({"rq_dashboard.requeue_job_view", "rq_dashboard.requeue_all"})
DELETES = frozenset({"rq_dashboard.delete_job_view", "rq_dashboard.empty_queue"})
MAX_NAME = 200
REGISTRIES = frozenset({"queued", "failed", "deferred", "started", "finished", "scheduled", "canceled"})
NUMBERS = {"per_page": 500, "page": 1_000_000}
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")  # what rq's Job accepts


def init_app(app: Flask, settings: Settings) -> None:
    """Register rq-dashboard's blueprint on Angora's Redis (unless it is off); no connection is made here."""
    if settings.rq_dashboard == "off":
        return
    import rq_dashboard  # rq-dashboard 0.9.0 imports `six` without declaring it (a dependency of Angora)

    url = settings.effective_redis_url
    # rq-dashboard reads redis+sentinel:// URLs itself (redis_sentinel_url: the same form, the same failover
    # following through redis-py's sentinel pool); the sentinels' own password it takes from its config only.
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", url)
    if urlsplit(url).scheme == SENTINEL_SCHEME and parse_sentinel_url(url).sentinel_password:
        app.config.setdefault("RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD", parse_sentinel_url(url).sentinel_password)
    app.config.setdefault("RQ_DASHBOARD_DISABLE_DELETE", True)
    app.extensions["angora_rq_dashboard"] = settings.rq_dashboard
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)  # required, else every page fails
    app.before_request(guard_dashboard)


def guard_dashboard() -> Any:
    """before_request: what rq-dashboard may do in this mode, and only with names that can exist."""
    if request.blueprint != "rq_dashboard":
        return None
    _check_args(request.view_args or {})
    if request.endpoint not in ACTIONS:
        return None
    if request.method != "POST":
        from werkzeug.exceptions import MethodNotAllowed

        raise MethodNotAllowed(valid_methods=["POST"], description="rq-dashboard's actions are POST only")
    if request.endpoint in REQUEUES:
        raise Conflict("requeue from rq-dashboard is refused: Angora's workers would never run the job",
                       detail="retry the execution instead: POST /api/v1/executions/<execution id>/retry")
    if request.endpoint in DELETES:
        raise Forbidden("delete and empty are disabled in rq-dashboard: they would leave Angora's runs waiting",
                        detail="kill or skip the execution instead (POST /api/v1/executions/<id>/kill or /skip)")
    if _mode() != "full":
        raise Forbidden("rq-dashboard is read-only here (ANGORA_RQ_DASHBOARD=readonly)")
    if request.endpoint == "rq_dashboard.compact_queue":
        return _compact_check(str(request.view_args["queue_name"]))  # type: ignore[index]
    return None


def _check_args(args: dict[str, Any]) -> None:
    """rq-dashboard takes its path's names and numbers as they come (a bad one was a 503): 404 for any that
    cannot name a page."""
    if args.get("instance_number", 0) != 0:
        raise NotFound("rq-dashboard instance not found: Angora has one Redis (instance 0)")
    if any(isinstance(v, str) and not _plausible(v) for v in args.values()):
        raise NotFound("no such queue, registry or job")
    if "job_id" in args and not JOB_ID.match(str(args["job_id"])):
        raise NotFound("no such job: RQ job ids are letters, digits, _ and -")
    if "registry_name" in args and args["registry_name"] not in REGISTRIES:
        raise NotFound(f"no such registry; RQ's are {', '.join(sorted(REGISTRIES))}")
    if "order" in args and args["order"] not in ("asc", "dsc"):
        raise NotFound("the order is asc or dsc")
    for name, most in NUMBERS.items():
        value = str(args.get(name, "1"))
        if not (value.isdigit() and value.isascii() and 1 <= int(value) <= most):
            raise NotFound(f"{name} is a whole number from 1 to {most}")


def _compact_check(queue: str) -> Any:
    """Compacting an unknown queue is 404; an empty one has nothing to compact (RQ's RENAME of the missing list
    was a 503)."""
    from flask import current_app, jsonify

    ext = current_app.extensions["angora"]
    known, length = ext.queries.rq_queue_state(queue)
    if not known:
        raise NotFound(f"no RQ queue named {queue[:80]!r}")
    return None if length else jsonify({"status": "OK"})


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
