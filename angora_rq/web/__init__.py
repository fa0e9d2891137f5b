"""The Flask web app (UI + JSON API), installed as angora_rq.web: `create_app()` is the only entry point."""
from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any, Optional

from flask import Flask, Response, current_app, send_from_directory
from werkzeug.middleware.proxy_fix import ProxyFix

from angora_rq.core.errors import AngoraError
from angora_rq.core.settings import Settings
from angora_rq.processes import logs
from angora_rq.store.link import release_link
from angora_rq.web.context import Angora
from angora_rq.web.errors import register_error_handlers

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024


def create_app(config: Optional[dict[str, Any]] = None) -> Flask:
    """Build the web app: `config` overrides Flask settings; config["SETTINGS"] replaces Settings.from_env()."""
    from angora_rq.web import api, auth, dashboard, health, intake, metrics, ops_api, send

    config = dict(config or {})
    settings = config.pop("SETTINGS", None) or Settings.from_env()
    # The entry point of the web role under a WSGI server (the Procfile's granian): log like the other roles.
    logs.configure(settings.log_level, settings.log_format)
    refuse_exposure(settings)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, **auth.cookie_config(settings))
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    app.config.update(config)
    ext = Angora.create(settings)
    app.extensions["angora"] = ext
    ext.definitions.refresh(force=True)
    auth.init_app(app, settings)
    ui = _ui_blueprint()
    if ui is not None:
        app.register_blueprint(ui, url_prefix="/")
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.register_blueprint(ops_api.bp, url_prefix="/api/v1")
    app.register_blueprint(send.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    dashboard.init_app(app, settings)
    register_error_handlers(app)
    app.teardown_request(lambda _: release_link(ext.r))  # the thread's held connection goes back to the pool
    app.add_url_rule("/favicon.ico", "favicon", favicon)
    intake.install(app)
    if settings.proxy_hops:  # outermost, so that the fast lane, the Host check and the cookies see the client's view
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore
    return app


def refuse_exposure(settings: Settings) -> None:
    """AngoraError when the settings say the app is bound off loopback without credentials (core.security)."""
    from angora_rq.core.security import exposure

    error, _ = exposure(settings, settings.bind) if settings.bind else (None, None)
    if error:
        raise AngoraError(error)


def favicon() -> Response:
    """The icon browsers ask for at /favicon.ico (pages also name the SVG one)."""
    static = current_app.static_folder or ""
    return send_from_directory(static, "favicon.ico", mimetype="image/vnd.microsoft.icon", max_age=86400)


def _ui_blueprint() -> Any:
    """The HTML UI's blueprint (web/ui.py, `bp`), when that module exists."""
    if importlib.util.find_spec(f"{__name__}.ui") is None:
        return None
    return importlib.import_module(f"{__name__}.ui").bp


