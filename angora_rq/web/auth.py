"""Authentication for every route of the app: API, pages and rq-dashboard (CSRF and Host checks: web/guard.py).

Credentials (only when ANGORA_AUTH_TOKEN, or ANGORA_AUTH_USER + ANGORA_AUTH_PASSWORD, is set): scripts send
`Authorization: Bearer <token>` (or HTTP Basic user:password); browsers log in at /login, which opens a session:
a random id in a signed cookie, and a record in Redis that logout deletes and that a change of credentials voids.
The cookie's signing key is ANGORA_SECRET_KEY, or 32 random bytes made once and kept in Redis: it owes nothing
to the credentials, so a cookie tells nothing about them. After LOGIN_LIMIT failed attempts (form, Bearer or
Basic) from one client address, that address gets 429 with Retry-After until LOGIN_WINDOW seconds have passed
since its first failure, whatever it sends. `/healthz`, `/login`, `/favicon.ico` and static files stay open.
Unauthenticated API calls get 401 JSON; unauthenticated pages redirect to /login?next=<page>. `/metrics` follows
the API's rules, and ANGORA_METRICS_TOKEN, when set, is one more bearer token that opens it (it alone; it is then
required even with auth off).

For the templates: `{{ current_user() }}` is the logged-in name ("token" for a token login, None when auth is off);
`{{ auth_enabled }}` says whether to show a logout button (a POST form to `auth.logout` with the csrf_token field).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from typing import Any, Optional

from flask import Blueprint, Flask, current_app, g, redirect, render_template_string, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from angora_rq.core.errors import InvalidInput, Throttled
from angora_rq.core.security import local_redirect
from angora_rq.core.settings import Settings
from angora_rq.store import websec
from angora_rq.store.connection import RedisError
from angora_rq.web import guard

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

OPEN_ENDPOINTS = frozenset({"health.healthz", "auth.login", "static", "favicon"})
METRICS_ENDPOINT = "metrics.metrics"
SESSION_HOURS = 12
LOGIN_LIMIT = 10
LOGIN_WINDOW = 300


def cookie_config(settings: Settings) -> dict[str, Any]:
    """Session cookie flags; create_app applies them before the caller's config, which may override them."""
    return {
        "SESSION_COOKIE_NAME": "angora_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Secure anyway whenever the request came over HTTPS (CookieSessions.get_cookie_secure).
        "SESSION_COOKIE_SECURE": settings.cookie_secure,
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=SESSION_HOURS),
    }


def init_app(app: Flask, settings: Settings) -> None:
    """Secret key, cookie sessions, the login blueprint, the auth + CSRF hooks and the Jinja helpers."""
    if settings.secret_key and not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = settings.secret_key
    app.extensions["angora_auth"] = settings
    app.session_interface = CookieSessions()
    app.register_blueprint(bp)
    guard.init_app(app, settings)
    app.before_request(authenticate)
    app.before_request(guard.protect_csrf)
    app.jinja_env.globals.update(current_user=current_user)
    app.context_processor(lambda: {"auth_enabled": settings.auth_enabled})


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the key fetched from Redis when first needed, and Secure over HTTPS.

    Requests that bring no session cookie get an empty session without a signer: for scripts
    (`curl -d msg=... /send`) that was ~60 us of key derivation per request for a session that is always empty.
    """

    def open_session(self, app: Flask, request: Any) -> Any:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> Any:
        signing_key(app)
        return super().get_signing_serializer(app)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        try:
            signing_key(app)
        except RedisError as e:  # no key while Redis is down: the answer (an error page) goes out without a cookie
            log.warning("session not saved: %s", e)
            return
        super().save_session(app, session, response)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def signing_key(app: Flask) -> bytes:
    """The sessions' signing key: configured, or the one kept in Redis (fetched once per process)."""
    if not app.secret_key:
        ext = app.extensions["angora"]
        app.secret_key = websec.web_secret(ext.r, ext.keys)  # every process reads the same key
    key = app.secret_key
    return key if isinstance(key, bytes) else str(key).encode()


def _settings() -> Settings:
    return current_app.extensions["angora_auth"]


# -- who is calling ------------------------------------------------------------------------------------

def same_secret(given: str, expected: Optional[str]) -> bool:
    """Constant-time comparison; False when nothing is configured."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def check_password(settings: Settings, user: str, password: str) -> bool:
    """Whether user:password are the configured ones (both compared, always)."""
    user_ok = same_secret(user, settings.auth_user)
    password_ok = same_secret(password, settings.auth_password)
    return user_ok and password_ok and bool(settings.auth_user and settings.auth_password)


def header_user(settings: Settings) -> Optional[str]:
    """The caller named by a valid Authorization header (Bearer token or Basic), else None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return "token" if same_secret(value.strip(), settings.auth_token) else None
    creds = request.authorization
    if creds is not None and creds.type == "basic":
        if check_password(settings, creds.username or "", creds.password or ""):
            return creds.username
    return None


def fingerprint(settings: Settings) -> str:
    """Names the credentials in force, keyed by the signing key: a session opened with others is void."""
    material = "\0".join((settings.auth_token or "", settings.auth_user or "", settings.auth_password or ""))
    return hmac.new(signing_key(current_app), material.encode(), hashlib.sha256).hexdigest()[:32]


def current_user() -> Optional[str]:
    """Who is logged in (None when auth is off or nobody is)."""
    return g.get("angora_user")


def client_address() -> str:
    """The client's address (the proxies' X-Forwarded-For already applied, ANGORA_PROXY_HOPS)."""
    return request.remote_addr or "unknown"


def authenticate() -> Any:
    """before_request: find the caller; refuse (401 JSON / redirect to /login) when auth is on and there is none."""
    settings = _settings()
    g.angora_user = None
    g.header_auth = False
    if request.endpoint == METRICS_ENDPOINT and settings.metrics_token:
        if scrape_token(settings):
            return None
        if not settings.auth_enabled:
            return unauthorized()  # a scrape token is set: /metrics is not open, even with auth off
    if not settings.auth_enabled:
        return None
    is_open = _is_open(request.endpoint)
    if request.headers.get("Authorization"):
        user = _checked_header_user(settings, is_open)
        if user is not None:
            g.angora_user, g.header_auth = user, True
            return None
    sid = session.get("sid")
    if sid and session.get("user"):
        ext = current_app.extensions["angora"]
        if websec.session_is_open(ext.r, ext.keys, str(sid), fingerprint(settings)):
            g.angora_user = session["user"]
            return None
        session.clear()  # logged out, expired, or opened with other credentials
    if is_open:
        return None
    return unauthorized()


def scrape_token(settings: Settings) -> bool:
    """Whether the request carries ANGORA_METRICS_TOKEN as its bearer token (it then opens /metrics)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and same_secret(value.strip(), settings.metrics_token):
        g.angora_user, g.header_auth = "metrics", True
        return True
    return False
def _checked_header_user(settings: Settings, is_open: bool) -> Optional[str]:
    """The Authorization header's user, unless its address is throttled (429; ignored on open routes)."""
    ext = current_app.extensions["angora"]
    wait = websec.login_wait(ext.r, ext.keys, client_address(), LOGIN_LIMIT)
    if wait:
        if is_open:
            return None
        raise Throttled("too many failed logins from this address; try again later", wait)
    user = header_user(settings)
    if user is None:
        websec.login_failed(ext.r, ext.keys, client_address(), LOGIN_WINDOW)
        log.warning("wrong credentials in the Authorization header from %s", client_address())
    return user


def _is_open(endpoint: Optional[str]) -> bool:
    return endpoint is not None and (endpoint in OPEN_ENDPOINTS or endpoint.endswith(".static"))


def unauthorized() -> Any:
    """401 JSON (with WWW-Authenticate) for API clients; a redirect to the login page for browsers."""
    from angora_rq.web.errors import error_response, wants_json

    if wants_json():
        resp = error_response(401, "authentication required",
                              "send 'Authorization: Bearer <token>' (or log in at /login in a browser)")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="angora"'
        return resp
    try:
        target = local_redirect(request.full_path)
    except InvalidInput:
        target = "/"
    return redirect(url_for("auth.login", next=target))


# -- login page ----------------------------------------------------------------------------------------

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Angora: log in</title>
<link rel="stylesheet" href="{{ url_for('static', filename='login.css') }}"></head>
<body class="login"><h1>Angora</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ url_for('auth.login') }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<input type="hidden" name="next" value="{{ next }}">
{% if with_password %}<label for="username">User</label>
<input id="username" name="username" autocomplete="username" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">{% endif %}
{% if with_token %}<label for="token">{% if with_password %}Or the API token{% else %}API token{% endif %}</label>
<input id="token" name="token" type="password" autocomplete="off"
 {%- if not with_password %} autofocus{% endif %}>{% endif %}
<button type="submit">Log in</button></form></body></html>"""


def _login_page(error: str = "", status: int = 200, headers: Optional[dict[str, str]] = None) -> Any:
    settings = _settings()
    nxt = local_redirect(request.values.get("next"))
    html = render_template_string(LOGIN_PAGE, error=error, next=nxt, with_token=bool(settings.auth_token),
                                  with_password=bool(settings.auth_user and settings.auth_password))
    return html, status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", **(headers or {})}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; a right token or user/password opens a session and goes to `next` (a path on this site)."""
    settings = _settings()
    nxt = local_redirect(request.values.get("next"))  # a control character is 400 before anything else
    if not settings.auth_enabled:
        return redirect(nxt)
    if request.method == "GET":
        return _login_page()
    ext = current_app.extensions["angora"]
    client = client_address()
    wait = websec.login_wait(ext.r, ext.keys, client, LOGIN_LIMIT)
    if wait:
        return _login_page(f"Too many failed logins from your address; try again in {wait} s.", 429,
                           {"Retry-After": str(wait)})
    user = _form_user(settings)
    if user is None:
        websec.login_failed(ext.r, ext.keys, client, LOGIN_WINDOW)
        log.warning("failed login from %s", client)
        return _login_page("Wrong credentials.", 401)
    websec.login_succeeded(ext.r, ext.keys, client)
    sid = secrets.token_urlsafe(24)
    websec.open_session(ext.r, ext.keys, sid, fingerprint(settings), SESSION_HOURS * 3600)
    session.clear()  # a fresh session (and CSRF token) at login: no fixation
    session.permanent = True
    session.update(user=user, sid=sid, csrf=secrets.token_urlsafe(32))
    return redirect(nxt)


def _form_user(settings: Settings) -> Optional[str]:
    form = request.form
    token = form.get("token", "")
    if token and same_secret(token, settings.auth_token):
        return "token"
    user, password = form.get("username", ""), form.get("password", "")
    if user and check_password(settings, user, password):
        return user
    return None


@bp.post("/logout")
def logout() -> Any:
    """End the browser session, here and in Redis (the cookie opens nothing afterwards)."""
    sid = session.get("sid")
    if sid:
        ext = current_app.extensions["angora"]
        websec.close_session(ext.r, ext.keys, str(sid))
    session.clear()
    return redirect(url_for("auth.login") if _settings().auth_enabled else "/")
