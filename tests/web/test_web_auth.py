"""Authentication (bearer, basic, login page + session) and CSRF across the API, /send, pages and rq-dashboard."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask, render_template_string
from flask.testing import FlaskClient

from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.web import create_app

TOKEN = "s3cret-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BROWSER = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(redis_url: str, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeApp:
    """Factory: an app on this test's Redis with the given credentials (no ANGORA_SECRET_KEY unless set)."""
    monkeypatch.delenv("ANGORA_SECRET_KEY", raising=False)
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "jobs.yml").write_text("- name: hello\n  triggers: [say.hello]\n  command: echo hi\n")

    def make(**overrides: Any) -> Flask:
        fields: dict[str, Any] = dict(redis_url=redis_url, prefix=keys.prefix, config_path=config,
                                      data_dir=tmp_path / "data")
        fields.update(overrides)
        return create_app({"SETTINGS": Settings(**fields), "TESTING": True})
    return make


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    """The app with a token configured."""
    return make_app(auth_token=TOKEN)


def login(client: FlaskClient, **form: str) -> Any:
    """Log in through the form the way a browser does (GET the page, post it with its CSRF token)."""
    page = client.get("/login?next=/api/v1/jobs").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return client.post("/login", data=dict(form, csrf_token=token, next="/api/v1/jobs"), headers=BROWSER)


def session_csrf(client: FlaskClient) -> str:
    """The CSRF token held in the client's session."""
    with client.session_transaction() as sess:
        return str(sess["csrf"])


# -- who may call ------------------------------------------------------------------------------------

API_ROUTES = [("get", "/api/v1/jobs"), ("get", "/api/v1/runs"), ("get", "/api/v1/runs/r1"),
              ("get", "/api/v1/config"), ("get", "/api/v1/graph"), ("get", "/api/v1/openapi.json"),
              ("post", "/api/v1/messages"), ("post", "/send"), ("post", "/api/v1/jobs/hello/run"),
              ("post", "/api/v1/executions/x/kill"), ("get", "/rq/0/data/queues.json")]


@pytest.mark.parametrize("method,url", API_ROUTES)
def test_api_without_credentials_is_401_json(app: Flask, method: str, url: str) -> None:
    resp = getattr(app.test_client(), method)(url, json={"msg": "say.hello"})
    assert resp.status_code == 401
    assert resp.get_json()["error"] and resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer wrong", "Bearer", f"Token {TOKEN}", "Basic Zm9vOmJhcg=="])
def test_wrong_credentials_are_401(app: Flask, header: str) -> None:
    assert app.test_client().get("/api/v1/jobs", headers={"Authorization": header}).status_code == 401


def test_bearer_token_opens_every_area(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/api/v1/jobs", headers=BEARER).status_code == 200
    assert client.get("/rq/0/data/queues.json", headers=BEARER).status_code == 200
    assert client.get("/rq/", headers=BEARER).status_code == 200
    # Token-authenticated calls are exempt from CSRF, even with browser-like headers.
    resp = client.post("/send", data={"msg": "say.hello"}, headers={**BEARER, **BROWSER})
    assert resp.status_code == 202
    assert client.post("/api/v1/jobs/hello/run", json={}, headers=BEARER).status_code == 202


def test_healthz_and_login_stay_open(app: Flask) -> None:
    client = app.test_client()
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Cache-Control"] == "no-store"
    assert client.get("/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 200
    assert client.get("/login").status_code == 200


@pytest.mark.parametrize("url", ["/rq/", "/rq/0/view/jobs", "/"])
def test_pages_redirect_to_login(app: Flask, url: str) -> None:
    resp = app.test_client().get(url, headers={"Accept": "text/html"})
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?next=")


def test_basic_auth_with_user_and_password(make_app: MakeApp) -> None:
    client = make_app(auth_user="ann", auth_password="pw-123").test_client()
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", auth=("ann", "pw-123")).status_code == 200
    assert client.get("/api/v1/jobs", auth=("ann", "nope")).status_code == 401
    assert client.get("/api/v1/jobs", headers={"Authorization": "Bearer pw-123"}).status_code == 401


# -- browser login -------------------------------------------------------------------------------------

def test_login_with_token_then_session_and_logout(app: Flask) -> None:
    client = app.test_client()
    resp = login(client, token=TOKEN)
    assert resp.status_code == 302 and resp.headers["Location"] == "/api/v1/jobs"
    assert client.get("/api/v1/jobs").status_code == 200
    assert client.get("/rq/").status_code == 200
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    out = client.post("/logout", data={"csrf_token": session_csrf(client)}, headers=BROWSER)
    assert out.status_code == 302
    assert client.get("/api/v1/jobs").status_code == 401


def test_login_with_user_password(make_app: MakeApp) -> None:
    client = make_app(auth_user="ann", auth_password="pw-123").test_client()
    assert login(client, username="ann", password="wrong").status_code == 401
    assert login(client, username="ann", password="pw-123").status_code == 302
    assert client.get("/api/v1/jobs").status_code == 200


def test_wrong_token_shows_the_form_again(app: Flask) -> None:
    client = app.test_client()
    resp = login(client, token="nope")
    assert resp.status_code == 401 and "Wrong credentials" in resp.get_data(as_text=True)
    assert client.get("/api/v1/jobs").status_code == 401


def test_login_without_csrf_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    client.get("/login")
    resp = client.post("/login", data={"token": TOKEN}, headers=BROWSER)
    assert resp.status_code == 403
    assert client.get("/api/v1/jobs").status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(app: Flask, target: str) -> None:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/login", data={"token": TOKEN, "csrf_token": token, "next": target}, headers=BROWSER)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_sessions_end_when_the_credentials_change(make_app: MakeApp) -> None:
    first = make_app(auth_token=TOKEN)
    client = first.test_client()
    login(client, token=TOKEN)
    cookie = client.get_cookie("angora_session")
    assert cookie is not None
    other = make_app(auth_token="another-token").test_client()
    other.set_cookie("angora_session", cookie.value)
    assert other.get("/api/v1/jobs").status_code == 401
    same = make_app(auth_token=TOKEN).test_client()
    same.set_cookie("angora_session", cookie.value)
    assert same.get("/api/v1/jobs").status_code == 200


# -- CSRF ----------------------------------------------------------------------------------------------

def test_session_post_needs_csrf_header_or_field(app: Flask) -> None:
    client = app.test_client()
    login(client, token=TOKEN)
    resp = client.post("/api/v1/messages", json={"msg": "say.hello"}, headers=BROWSER)
    assert resp.status_code == 403 and "CSRF" in resp.get_json()["error"]
    resp = client.post("/api/v1/messages", json={"msg": "say.hello"},
                       headers={**BROWSER, "X-CSRF-Token": "forged"})
    assert resp.status_code == 403
    token = session_csrf(client)
    resp = client.post("/api/v1/messages", json={"msg": "say.hello"}, headers={**BROWSER, "X-CSRF-Token": token})
    assert resp.status_code == 202
    resp = client.post("/send", data={"msg": "say.hello", "csrf_token": token}, headers=BROWSER)
    assert resp.status_code == 202


def test_csrf_failure_on_a_page_is_a_page(app: Flask) -> None:
    client = app.test_client()
    login(client, token=TOKEN)
    resp = client.post("/logout", headers={**BROWSER, "Accept": "text/html"})
    assert resp.status_code == 403 and resp.mimetype == "text/html"
    assert client.get("/api/v1/jobs").status_code == 200  # still logged in


def test_without_auth_scripts_post_freely_but_browsers_need_the_token(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert client.post("/send", data={"msg": "say.hello"}).status_code == 202  # curl -d msg=...
    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    resp = client.post("/send", data={"msg": "say.hello"}, headers=cross_site)
    assert resp.status_code == 403
    assert client.post("/api/v1/jobs/hello/run", json={}, headers={"Referer": "http://x/"}).status_code == 403
    with client.session_transaction() as sess:
        sess["csrf"] = "known-token"
    resp = client.post("/send", data={"msg": "say.hello", "csrf_token": "known-token"}, headers=BROWSER)
    assert resp.status_code == 202


def test_rq_dashboard_buttons_need_the_token_and_this_origin(make_app: MakeApp) -> None:
    app = make_app(auth_token=TOKEN, rq_dashboard="full")
    client = app.test_client()
    assert client.post("/api/v1/jobs/hello/run", json={}, headers=BEARER).status_code == 202  # queue exists
    login(client, token=TOKEN)
    token = session_csrf(client)
    compact = f"/rq/queue/{app.extensions['angora'].keys.rq_name('default')}/compact"  # RQ's name of the queue
    evil = client.post(compact, headers={"Origin": "https://evil.example", "X-CSRF-Token": token})
    assert evil.status_code == 403
    no_token = client.post(compact, headers={"Origin": "http://localhost"})
    assert no_token.status_code == 403
    ok = client.post(compact, headers={"Origin": "http://localhost", "X-CSRF-Token": token})
    assert ok.status_code == 200 and ok.get_json()["status"] == "OK"
    # A queue RQ does not know: 404, not a 503 from Redis' "no such key".
    same = {"Origin": "http://localhost", "X-CSRF-Token": token}
    missing = client.post("/rq/queue/nosuchqueue/compact", headers=same)
    assert missing.status_code == 404


def test_csrf_token_and_current_user_for_templates(app: Flask) -> None:
    @app.get("/probe")
    def probe() -> str:
        return render_template_string("{{ csrf_token() }}|{{ current_user() }}|{{ auth_enabled }}")

    client = app.test_client()
    login(client, token=TOKEN)
    assert {"csrf_token", "current_user"} <= set(app.jinja_env.globals)
    token = session_csrf(client)
    assert client.get("/probe").get_data(as_text=True) == f"{token}|token|True"


def test_log_lines_escape_request_paths(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    client = make_app().test_client()
    with caplog.at_level(logging.WARNING):
        client.post("/send%0Afake%20log%20line", headers=BROWSER)
    assert caplog.records and all("\n" not in r.getMessage() for r in caplog.records)
