"""Authentication and CSRF protection for every route of the app: API, pages and rq-dashboard.

Credentials (only when ANGORA_AUTH_TOKEN, or ANGORA_AUTH_USER + ANGORA_AUTH_PASSWORD, is set):
scripts send `Authorization: Bearer <token>` (or HTTP Basic user:password); browsers log in at /login, which
sets a signed session cookie. `/healthz`, `/login`, `/favicon.ico` and static files stay open. Unauthenticated API calls
get 401 JSON; unauthenticated pages redirect to /login?next=<page>.

CSRF: every POST/PUT/PATCH/DELETE from a browser must carry the session's token, checked here by a
before_request hook, so views never check it themselves. Requests authenticated by an Authorization header
are exempt. With auth off, requests with none of the headers browsers always send (Cookie, Origin, Referer,
Sec-Fetch-*) are scripts (`curl -d msg=... /send`) and are exempt too. rq-dashboard's own buttons cannot send
the token, so its POSTs are accepted when Origin/Referer name this very site.

For the UI pages (web/ui.py, web/templates/):
- In a form: `<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">` (Jinja global).
- For same-origin fetch(): put `<meta name="csrf-token" content="{{ csrf_token() }}">` in the layout and send
  it as the `X-CSRF-Token` header (the session cookie goes along by itself).
- `{{ current_user() }}` is the logged-in name ("token" for a token login, None when auth is off);
  `{{ auth_enabled }}` says whether to show a logout button:
  `<form method="post" action="{{ url_for('auth.logout') }}">` + the hidden csrf_token field.
- In Python: `from .auth import csrf_token, current_user`.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from flask import (Blueprint, Flask, Response, current_app, g, redirect, render_template_string, request, session,
                   url_for)
from flask.sessions import SecureCookieSessionInterface

from angora_rq.core.settings import Settings

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
OPEN_ENDPOINTS = frozenset({"health.healthz", "auth.login", "static", "favicon"})
BROWSER_HEADERS = ("Cookie", "Origin", "Referer", "Sec-Fetch-Site", "Sec-Fetch-Mode")
JSON_PREFIXES = ("/api/", "/send", "/healthz")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
KDF_SALT = b"angora-web-session-key-v1"
# Every answer carries these; answers under JSON_PREFIXES also carry Cache-Control: no-store.
SECURITY_HEADERS = (("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "same-origin"))


def cookie_config() -> dict[str, Any]:
    """Session cookie flags; create_app applies them before the caller's config, which may override them."""
    return {
        "SESSION_COOKIE_NAME": "angora_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Behind HTTPS (a proxy that terminates TLS), set ANGORA_COOKIE_SECURE=1.
        "SESSION_COOKIE_SECURE": os.environ.get("ANGORA_COOKIE_SECURE", "") == "1",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
    }


def init_app(app: Flask, settings: Settings) -> None:
    """Secret key, cookie flags, the login blueprint, the auth + CSRF hooks and the Jinja helpers."""
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secret_key(settings)
    app.extensions["angora_auth"] = settings
    app.session_interface = CookieSessions()
    app.register_blueprint(bp)
    app.before_request(authenticate)
    app.before_request(protect_csrf)
    app.after_request(security_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, current_user=current_user)
    app.context_processor(lambda: {"auth_enabled": settings.auth_enabled})


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, minus the signer built for requests that bring no session cookie.

    Flask opens the session of every request; for scripts (`curl -d msg=... /send`) that was ~60 us of key
    derivation per request for a session that is always empty.
    """

    def open_session(self, app: Flask, request: Any) -> Any:
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def secret_key(settings: Settings) -> bytes:
    """ANGORA_SECRET_KEY, else a key derived from the credentials (scrypt), else one kept in the data dir."""
    configured = os.environ.get("ANGORA_SECRET_KEY")
    if configured:
        return configured.encode()
    if settings.auth_enabled:
        material = "\0".join((settings.auth_token or "", settings.auth_user or "", settings.auth_password or ""))
        return hashlib.scrypt(material.encode(), salt=KDF_SALT, n=2 ** 14, r=8, p=1, dklen=32)
    return _stored_key(settings.data_dir / "web-secret-key")


def _stored_key(path: Path) -> bytes:
    """A random key kept in a 0600 file, so every web server worker and restart shares it (no auth: CSRF only)."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
    except FileExistsError:
        return _stored_key(path)
    except OSError as e:
        log.warning("cannot keep the web session key in %s (%s); sessions end when this process stops", path, e)
    return key


def security_headers(resp: Response) -> Response:
    """No framing (clickjacking), no MIME sniffing, no referrers to other sites; API answers are not cached."""
    for name, value in SECURITY_HEADERS:
        resp.headers.setdefault(name, value)
    if request.path.startswith(JSON_PREFIXES):
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


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
    """Ties a session to the credentials it was opened with: changing them logs every browser out."""
    material = "\0".join((settings.auth_token or "", settings.auth_user or "", settings.auth_password or ""))
    key = current_app.secret_key
    key = key if isinstance(key, bytes) else str(key).encode()
    return hmac.new(key, material.encode(), hashlib.sha256).hexdigest()[:32]


def current_user() -> Optional[str]:
    """Who is logged in (None when auth is off or nobody is)."""
    return g.get("angora_user")


def authenticate() -> Any:
    """before_request: find the caller; refuse (401 JSON / redirect to /login) when auth is on and there is none."""
    settings = _settings()
    g.angora_user = None
    g.header_auth = False
    if not settings.auth_enabled:
        return None
    user = header_user(settings) if request.headers.get("Authorization") else None
    if user is not None:
        g.angora_user, g.header_auth = user, True
        return None
    if session.get("user") and hmac.compare_digest(str(session.get("auth", "")), fingerprint(settings)):
        g.angora_user = session["user"]
        return None
    if _is_open(request.endpoint):
        return None
    return unauthorized()


def _is_open(endpoint: Optional[str]) -> bool:
    return endpoint is not None and (endpoint in OPEN_ENDPOINTS or endpoint.endswith(".static"))


def unauthorized() -> Any:
    """401 JSON (with WWW-Authenticate) for API clients; a redirect to the login page for browsers."""
    from angora_rq.web import error_response

    if wants_json():
        resp = error_response(401, "authentication required",
                              "send 'Authorization: Bearer <token>' (or log in at /login in a browser)")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="angora"'
        return resp
    return redirect(url_for("auth.login", next=_local_path(request.full_path)))


def wants_json() -> bool:
    """Whether the caller is a script or the API (JSON errors) rather than a browser page (HTML)."""
    path = request.path
    if path.startswith(JSON_PREFIXES) or (path.startswith("/rq/") and "/data/" in path):
        return True
    if request.headers.get("Authorization") or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


# -- CSRF ----------------------------------------------------------------------------------------------

def csrf_token() -> str:
    """The session's CSRF token (created on first use); put it in forms and the X-CSRF-Token header."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def protect_csrf() -> Any:
    """before_request: refuse a state-changing browser request without the session's CSRF token (403)."""
    if request.method in SAFE_METHODS or g.get("header_auth"):
        return None
    if not _settings().auth_enabled and not any(h in request.headers for h in BROWSER_HEADERS):
        return None  # a script (curl), not a browser: there is no ambient credential to abuse
    sent = request.headers.get(CSRF_HEADER) or _form_token()
    expected = session.get("csrf")
    if sent and expected and hmac.compare_digest(str(sent), str(expected)):
        return None
    if request.blueprint == "rq_dashboard" and _same_origin():
        return None  # rq-dashboard's own buttons cannot send the token; the browser says it is this site
    from angora_rq.web import error_response

    log.warning("CSRF check failed for %s %r", request.method, request.path)
    return error_response(403, "CSRF token missing or invalid",
                          f"reload the page and try again; scripts send the {CSRF_HEADER} header or a token")


def _form_token() -> Optional[str]:
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return request.form.get(CSRF_FIELD)
    return None


def _same_origin() -> bool:
    """Origin (or, without it, Referer) names this site."""
    here = request.host_url.rstrip("/")
    origin = request.headers.get("Origin")
    if origin:
        return origin.rstrip("/") == here
    referer = request.headers.get("Referer", "")
    return referer == here or referer.startswith(here + "/")


# -- login page ----------------------------------------------------------------------------------------

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Angora: log in</title>
<style>body{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}
button{margin-top:1rem;padding:.5rem 1rem}.error{color:#b00020}</style></head>
<body><h1>Angora</h1>
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


def _local_path(target: Optional[str]) -> str:
    """`target` if it is a path on this site, else "/" (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target.rstrip("?") or "/"


def _login_page(error: str = "", status: int = 200) -> Any:
    settings = _settings()
    nxt = _local_path(request.values.get("next"))
    html = render_template_string(LOGIN_PAGE, error=error, next=nxt, with_token=bool(settings.auth_token),
                                  with_password=bool(settings.auth_user and settings.auth_password))
    return html, status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; a right token or user/password opens a session and goes to `next`."""
    settings = _settings()
    if not settings.auth_enabled:
        return redirect(_local_path(request.values.get("next")))
    if request.method == "GET":
        return _login_page()
    user = _form_user(settings)
    if user is None:
        log.warning("failed login from %s", request.remote_addr)
        return _login_page("Wrong credentials.", 401)
    session.clear()  # a fresh session (and CSRF token) at login: no fixation
    session.permanent = True
    session.update(user=user, auth=fingerprint(settings), csrf=secrets.token_urlsafe(32))
    return redirect(_local_path(request.form.get("next")))


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
    """End the browser session."""
    session.clear()
    return redirect(url_for("auth.login") if _settings().auth_enabled else "/")
