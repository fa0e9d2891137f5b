"""The Flask web app (UI + JSON API), installed as angora_rq.web: `create_app()` is the only entry point."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from flask import Flask, Response, current_app, jsonify, make_response, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from angora_rq.processes import logs
from angora_rq.store.connection import Redis, connect, unavailable
from angora_rq.store.control import Control
from angora_rq.store.reloads import reload_requests
from angora_rq.core.errors import AngoraError, DefinitionError, NotFound, Overloaded, Unavailable
from angora_rq.core.keys import Keys
from angora_rq.store.pressure import Pressure
from angora_rq.store.queries import Queries
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.definitions.reload import Reloader
from angora_rq.definitions.source import ConfigSource

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0
MAX_BODY = 1024 * 1024


class Definitions:
    """The web app's view of the job definitions: the last good snapshot, and the files' current errors.

    Kept current the way the matchers and schedulers are: a ConfigSource switched by a Reloader (a reload request
    in Redis, or changed files), so every process serves the same version. Until the files have been valid once,
    they are read again every `recheck` seconds.
    """

    def __init__(self, path: Path, requests: Callable[[], Any], recheck: float = RECHECK_SECONDS) -> None:
        self.path = Path(path)
        self.requests = requests  # reads the reload-request counter (store.reloads.reload_requests)
        self.recheck = recheck
        self.reloader: Optional[Reloader] = None  # once the files have been valid at least once
        self.errors: list[Any] = []
        self.checked = float("-inf")
        self._lock = threading.Lock()

    @property
    def source(self) -> Optional[ConfigSource]:
        """The ConfigSource (None when the definitions have never been valid)."""
        return None if self.reloader is None else self.reloader.source

    def refresh(self, force: bool = False) -> None:
        """Catch up with the files (`force`: read them now); a broken change keeps the last good version."""
        if not self._lock.acquire(blocking=force):
            return  # another thread is checking or reading the files right now
        try:
            if self.reloader is None:
                self._first_load(force)
            else:
                if force:
                    self.reloader.request()
                self.reloader.check()
                self.errors = list(self.reloader.source.last_errors)
        except Exception as e:  # noqa: BLE001 - unreadable files must not stop the app; show them instead
            log.exception("cannot read the definitions in %s", self.path)
            self.errors = [f"{self.path}: {e}"]
        finally:
            self._lock.release()

    def _first_load(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.checked < self.recheck:
            return
        self.checked = now
        try:
            source = ConfigSource(self.path)
        except DefinitionError as e:
            self.errors = list(e.problems)
            return
        self.reloader = Reloader(self.requests, source)
        self.errors = []

    def snapshot(self) -> Snapshot:
        """The definitions in force; Unavailable when no valid version was ever loaded."""
        self.refresh()
        source = self.source
        if source is None:
            raise Unavailable("no valid job definitions are loaded; see /api/v1/config",
                              detail=[problem_json(p) for p in self.errors])
        return source.current()

    def status(self) -> dict[str, Any]:
        """What is loaded and what is wrong with the files as they are now."""
        self.refresh()
        source = self.source
        snap = source.current() if source is not None else None
        config = snap.config if snap is not None else None
        return {
            "path": str(self.path),
            "loaded": snap is not None,
            "valid": not self.errors,
            "version": config.version if config else None,
            "files": list(config.files) if config else [],
            "jobs": len(config.jobs) if config else 0,
            "schedules": len(config.schedules) if config else 0,
            "warnings": [problem_json(p) for p in config.warnings] if config else [],
            "errors": [problem_json(p) for p in self.errors],
        }


def problem_json(p: Any) -> dict[str, Any]:
    """A definitions problem as JSON (model.Problem, or plain text)."""
    if hasattr(p, "to_json"):
        return dict(p.to_json())
    text = str(p)
    return {"severity": "error", "path": None, "line": None, "col": None, "job": None, "message": text, "text": text}


@dataclass
class Angora:
    """What every request needs, on `app.extensions["angora"]`: settings, Redis, keys, reads, actions, definitions,
    the budgets."""

    settings: Settings
    r: Redis
    keys: Keys
    queries: Queries
    control: Control
    definitions: Definitions
    pressure: Pressure

    @classmethod
    def create(cls, settings: Settings) -> "Angora":
        """Build the resources; nothing connects until the first command."""
        r = connect(settings, socket_timeout=10)
        keys = Keys(settings.prefix)
        definitions = Definitions(settings.config_path, reload_requests(r, keys))
        return cls(settings, r, keys, Queries(r, keys), Control(r, keys, settings), definitions,
                   Pressure(r, keys, settings))

    @property
    def source(self) -> Optional[ConfigSource]:
        """The ConfigSource (None when the definitions have never been valid)."""
        return self.definitions.source

    def snapshot(self) -> Snapshot:
        """The definitions in force."""
        return self.definitions.snapshot()


def angora() -> Angora:
    """The resources of the current app."""
    return current_app.extensions["angora"]


def create_app(config: Optional[dict[str, Any]] = None) -> Flask:
    """Build the web app: `config` overrides Flask settings; config["SETTINGS"] replaces Settings.from_env()."""
    from angora_rq.web import api, auth, dashboard, health, intake, ops_api, send

    config = dict(config or {})
    settings = config.pop("SETTINGS", None) or Settings.from_env()
    # The entry point of the web role under a WSGI server (the Procfile's granian): log like the other roles.
    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, **auth.cookie_config())
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
    dashboard.init_app(app, settings)
    register_error_handlers(app)
    intake.install(app)
    return app


def _ui_blueprint() -> Any:
    """The HTML UI's blueprint (web/ui.py, `bp`), when that module exists."""
    if importlib.util.find_spec(f"{__name__}.ui") is None:
        return None
    return importlib.import_module(f"{__name__}.ui").bp


# -- errors: a JSON body or a small page, never a traceback, never a 500 --------------------------------

def register_error_handlers(app: Flask) -> None:
    """AngoraError -> its status; HTTP errors -> JSON for API clients; anything else -> logged, 503."""
    app.register_error_handler(AngoraError, _angora_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def error_response(status: int, message: str, detail: Any = None) -> Response:
    """`{"error", "detail"}` as JSON for API clients, a minimal escaped page for browsers."""
    from angora_rq.web.auth import wants_json

    if wants_json():
        body: dict[str, Any] = {"error": message}
        if detail is not None:
            body["detail"] = detail
        resp = jsonify(body)
    else:
        resp = make_response(f"<!doctype html><title>Angora: {status}</title><h1>{status}</h1>"
                             f"<p>{escape(message)}</p><p><a href=\"/\">Angora home</a></p>")
        resp.headers["Content-Type"] = "text/html; charset=utf-8"
    resp.status_code = status
    return resp


def _angora_error(e: AngoraError) -> Response:
    resp = error_response(e.status, e.message, e.detail)
    if isinstance(e, Overloaded):
        resp.headers["Retry-After"] = str(e.retry_after)
    return resp


def _http_error(e: HTTPException) -> Any:
    from angora_rq.web.auth import wants_json

    code = e.code or 400
    if code >= 500:
        return _unexpected(e)
    if not wants_json():
        return e
    resp = error_response(code, e.name, e.description)
    allow = e.get_response().headers.get("Allow")
    if allow:
        resp.headers["Allow"] = allow
    return resp


def _unexpected(e: BaseException) -> Response:
    mapped = from_library_error(e)
    if mapped is not None:
        log.warning("%s %r: %s", request.method, request.path, mapped.message)
        return _angora_error(mapped)
    log.exception("unexpected error in %s %r", request.method, request.path)
    return error_response(503, "internal error; it has been logged on the server")


def from_library_error(e: BaseException) -> Optional[AngoraError]:
    """Redis trouble -> Unavailable (store.connection.unavailable); rq's unknown job -> NotFound; else None."""
    from rq.exceptions import NoSuchJobError

    if isinstance(e, NoSuchJobError):
        return NotFound(str(e) or "no such RQ job")
    return unavailable(e)
