"""Errors of the web app: a JSON body for scripts and the API, a page in Angora's layout for browsers; never a
traceback, never a 500."""
from __future__ import annotations

import logging
from typing import Any, Optional

from flask import Flask, Response, jsonify, make_response, redirect, render_template, request, url_for
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from angora_rq.core.errors import AngoraError, NotFound
from angora_rq.store.connection import ResponseError, unavailable
from angora_rq.web.guard import JSON_PREFIXES

log = logging.getLogger(__name__)


def register_error_handlers(app: Flask) -> None:
    """AngoraError -> its status; HTTP errors -> JSON for API clients; anything else -> logged, 503."""
    app.register_error_handler(AngoraError, _angora_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def error_response(status: int, message: str, detail: Any = None) -> Response:
    """`{"error", "detail"}` as JSON for API clients, an error page in Angora's layout for browsers."""
    if wants_json():
        body: dict[str, Any] = {"error": message}
        if detail is not None:
            body["detail"] = detail
        resp = jsonify(body)
    else:
        resp = make_response(error_page(status, message))
        resp.headers["Content-Type"] = "text/html; charset=utf-8"
    resp.status_code = status
    return resp


def error_page(status: int, message: str) -> str:
    """The styled error page; a bare one if even that cannot be drawn (the layout reads Redis for its header)."""
    try:
        # no header counts: an error page must not depend on Redis answering.
        return render_template("error.html", status=status, message=message, header_counts=_no_counts)
    except Exception:  # noqa: BLE001 - the error being reported matters more than this one
        log.exception("cannot draw the error page")
        return (f"<!doctype html><title>Angora: {status}</title><h1>{status}</h1>"
                f"<p>{escape(message)}</p><p><a href=\"/\">Angora home</a></p>")


def _no_counts() -> dict[str, int]:
    return {}


def _angora_error(e: AngoraError) -> Response:
    resp = error_response(e.status, e.message, e.detail)
    retry_after = getattr(e, "retry_after", None)
    if retry_after:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def _http_error(e: HTTPException) -> Any:
    code = e.code or 400
    if code >= 500:
        return _unexpected(e)
    if code == 405 and request.method == "GET" and request.path == "/send" and _browser():
        # The address of the README's `curl -d ... /send`, opened in a browser: the form that sends a message.
        return redirect(url_for("ui.send_message"), 303)
    if not wants_json() and code not in (404, 405):
        return e  # redirects and the like keep werkzeug's own answer
    resp = error_response(code, e.name if wants_json() else _page_message(e), e.description)
    allow = e.get_response().headers.get("Allow")
    if allow:
        resp.headers["Allow"] = allow
    return resp


def _page_message(e: HTTPException) -> str:
    if e.code == 404:
        return f"There is no page at {request.path[:200]}."
    return f"{e.name}: {request.method} is not allowed on {request.path[:200]}."


def _unexpected(e: BaseException) -> Response:
    mapped = from_library_error(e)
    if mapped is not None:
        log.warning("%s %r: %s", request.method, request.path, mapped.message)
        return _angora_error(mapped)
    log.exception("unexpected error in %s %r", request.method, request.path)
    return error_response(503, "internal error; it has been logged on the server")


def from_library_error(e: BaseException) -> Optional[AngoraError]:
    """Redis trouble -> Unavailable (store.connection.unavailable); rq's unknown job, or a key that does not exist
    (rq-dashboard's compact of an unknown queue renames a missing list) -> NotFound; else None."""
    from rq.exceptions import NoSuchJobError

    if isinstance(e, NoSuchJobError):
        return NotFound(str(e) or "no such RQ job")
    if isinstance(e, ResponseError) and "no such key" in str(e).lower():
        return NotFound("no such queue or job")
    return unavailable(e)


def _browser() -> bool:
    """Whether a browser asks (it names text/html; curl's `*/*` does not), not a script with credentials."""
    return not request.headers.get("Authorization") and any(m == "text/html" for m, _ in request.accept_mimetypes)


def wants_json() -> bool:
    """Whether the caller is a script or the API (JSON errors) rather than a browser page (HTML)."""
    path = request.path
    if path.startswith(JSON_PREFIXES) or (path.startswith("/rq/") and "/data/" in path):
        return True
    if request.headers.get("Authorization") or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"
