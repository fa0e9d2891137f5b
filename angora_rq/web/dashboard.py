"""rq-dashboard mounted at /rq on the same app, behind the same authentication (auth.authenticate)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, request

from angora_rq.core.errors import NotFound
from angora_rq.core.settings import SENTINEL_SCHEME, Settings, parse_sentinel_url

URL_PREFIX = "/rq"


def init_app(app: Flask, settings: Settings) -> None:
    """Register rq-dashboard's blueprint on Angora's Redis; no connection is made here."""
    import rq_dashboard  # rq-dashboard 0.9.0 imports `six` without declaring it (a dependency of Angora)

    url = settings.effective_redis_url
    # rq-dashboard reads redis+sentinel:// URLs itself (redis_sentinel_url: the same form, the same failover
    # following through redis-py's sentinel pool); the sentinels' own password it takes from its config only.
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", url)
    if urlsplit(url).scheme == SENTINEL_SCHEME and parse_sentinel_url(url).sentinel_password:
        app.config.setdefault("RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD", parse_sentinel_url(url).sentinel_password)
    # Deleting an execution's RQ job behind Angora's back would leave its run waiting: use kill/skip instead.
    app.config.setdefault("RQ_DASHBOARD_DISABLE_DELETE", True)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)  # required, else every page fails
    app.before_request(_one_instance)


def _one_instance() -> Any:
    """Angora has one Redis: rq-dashboard instance numbers other than 0 are 404, not its LookupError."""
    if request.blueprint != "rq_dashboard" or not request.view_args:
        return None
    if request.view_args.get("instance_number", 0) != 0:
        raise NotFound("rq-dashboard instance not found: Angora has one Redis (instance 0)")
    return None
