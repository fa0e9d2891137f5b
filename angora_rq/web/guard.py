"""Guards every request passes before any view: the Host allow-list, CSRF and Origin checks; the security headers.

Host: a request whose Host header is not one of ANGORA_ALLOWED_HOSTS (default: the loopback names when bound to
loopback) gets 400 JSON before anything else runs: a page on another site that re-points its own name at this
server (DNS rebinding) reaches nothing.

CSRF: every POST/PUT/PATCH/DELETE from a browser must carry the session's token (the `X-CSRF-Token` header, or a
`csrf_token` form field), and an Origin header, when present, must name this site. Requests authenticated by an
Authorization header are exempt (a browser never adds one by itself). With auth off, requests with none of the
headers browsers always send (Cookie, Origin, Referer, Sec-Fetch-*) are scripts (`curl -d msg=... /send`): exempt
too. rq-dashboard's buttons send the token like Angora's pages (templates/rq_dashboard/base.html).

For the UI pages (web/ui.py, web/templates/):
- In a form: `<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">` (Jinja global).
- For same-origin fetch(): the layout has `<meta name="csrf-token" content="{{ csrf_token() }}">`; send it as the
  `X-CSRF-Token` header (the session cookie goes along by itself).

Headers: every answer forbids framing and MIME sniffing and sends no Referer to other sites; its
Content-Security-Policy allows scripts and styles from this site only (no inline script, no inline style).
rq-dashboard's pages, whose scripts are inline templates compiled with underscore.js, get a per-page nonce and
'unsafe-eval' for scripts, and inline styles.
"""
from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any, Optional
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, jsonify, request, session

from angora_rq.core.errors import Forbidden
from angora_rq.core.security import allowed_hosts, host_allowed
from angora_rq.core.settings import Settings

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
BROWSER_HEADERS = ("Cookie", "Origin", "Referer", "Sec-Fetch-Site", "Sec-Fetch-Mode")
JSON_PREFIXES = ("/api/", "/send", "/healthz", "/metrics")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CSP_RQ_DASHBOARD = ("default-src 'self'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; "
                    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Every answer carries these (the fast lane's too); answers under JSON_PREFIXES also carry Cache-Control: no-store.
SECURITY_HEADERS = (("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "same-origin"), ("Content-Security-Policy", CSP))


def init_app(app: Flask, settings: Settings) -> None:
    """The Host check (first of all hooks), the CSRF check (after auth.authenticate), the headers, the helpers."""
    app.extensions["angora_hosts"] = allowed_hosts(settings)
    app.before_request_funcs.setdefault(None, []).insert(0, check_host)
    app.after_request(security_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, csp_nonce=csp_nonce)


def check_host() -> Any:
    """before_request: 400 JSON for a Host header that does not name this site."""
    host = request.headers.get("Host", "")
    if host_allowed(host, current_app.extensions["angora_hosts"]):
        return None
    log.warning("refused Host header %r", host[:100])
    resp = jsonify({"error": "unknown Host header",
                    "detail": "this server answers to the names in ANGORA_ALLOWED_HOSTS only"})
    resp.status_code = 400
    return resp


def security_headers(resp: Response) -> Response:
    """No framing, no sniffing, no referrers to other sites, scripts from this site only; no caching of the API."""
    for name, value in SECURITY_HEADERS:
        resp.headers.setdefault(name, value)
    nonce = g.get("csp_nonce")
    if nonce:
        resp.headers["Content-Security-Policy"] = CSP_RQ_DASHBOARD.format(nonce=nonce)
    if request.path.startswith(JSON_PREFIXES):
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def csp_nonce() -> str:
    """A nonce for this page's inline script (rq-dashboard's pages only); the CSP header then allows it."""
    nonce = g.get("csp_nonce")
    if not nonce:
        nonce = g.csp_nonce = secrets.token_urlsafe(16)
    return str(nonce)


# -- CSRF and Origin -------------------------------------------------------------------------------------

def csrf_token() -> str:
    """The session's CSRF token (created on first use); put it in forms and the X-CSRF-Token header."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def protect_csrf() -> Any:
    """before_request: refuse (403) a state-changing browser request from another site or without the token."""
    if request.method in SAFE_METHODS or g.get("header_auth"):
        return None
    auth_enabled = current_app.extensions["angora_auth"].auth_enabled
    if not auth_enabled and not any(h in request.headers for h in BROWSER_HEADERS):
        return None  # a script (curl), not a browser: there is no ambient credential to abuse
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin):
        return _refuse("this request comes from another site", f"Origin {origin[:100]!r} is not this site")
    sent = request.headers.get(CSRF_HEADER) or _form_token()
    expected = session.get("csrf")
    if sent and expected and hmac.compare_digest(str(sent), str(expected)):
        return None
    return _refuse("CSRF token missing or invalid",
                   f"reload the page and try again; scripts send the {CSRF_HEADER} header or a token")


def same_origin(origin: str) -> bool:
    """Whether an Origin header names this site (host and port; the scheme may differ behind a TLS proxy)."""
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == request.host.lower()


def _refuse(message: str, detail: str) -> Any:
    log.warning("%s: %s %r", message, request.method, request.path)
    raise Forbidden(message, detail)  # answered by the app's error handlers (JSON, or a page for browsers)


def _form_token() -> Optional[str]:
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return request.form.get(CSRF_FIELD)
    return None
