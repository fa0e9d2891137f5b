"""The web role on a network (issue 14): Host allow-list, proxies, sessions, login throttling, /healthz, headers,
rq-dashboard, and refusing to serve the network without credentials."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from angora_rq.core.errors import AngoraError
from angora_rq.core.keys import Keys
from angora_rq.core.security import exposure
from angora_rq.core.settings import Settings
from angora_rq.web import create_app

TOKEN = "a-token-for-these-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BROWSER = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(redis_url: str, keys: Keys, tmp_path: Path) -> MakeApp:
    """Factory: an app on this test's Redis with Settings overrides."""
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "jobs.yml").write_text("- name: hello\n  triggers: [say.hello]\n  command: echo hi\n")

    def make(**overrides: Any) -> Flask:
        fields: dict[str, Any] = dict(redis_url=redis_url, prefix=keys.prefix, config_path=config,
                                      data_dir=tmp_path / "data")
        fields.update(overrides)
        return create_app({"SETTINGS": Settings(**fields), "TESTING": True})
    return make


def login(client: FlaskClient, token: str = TOKEN, **headers: str) -> Any:
    """Log in through the form as a browser does."""
    page = client.get("/login", headers=headers).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return client.post("/login", data={"token": token, "csrf_token": csrf}, headers={**BROWSER, **headers})


def csrf(client: FlaskClient) -> str:
    with client.session_transaction() as sess:
        return str(sess["csrf"])


# -- who may serve what ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host,fields,error", [
    ("127.0.0.1", {}, False), ("::1", {}, False), ("localhost", {}, False),
    ("0.0.0.0", {}, True), ("10.1.2.3", {}, True), ("0.0.0.0", {"auth_token": "t"}, False),
    ("0.0.0.0", {"auth_off": True}, False), ("0.0.0.0", {"auth_off": True, "auth_token": "t"}, True),
])
def test_exposure_rules(host: str, fields: dict[str, Any], error: bool) -> None:
    problem, warning = exposure(Settings(**fields), host)
    assert bool(problem) == error
    if problem and not fields:
        assert "ANGORA_AUTH_TOKEN" in problem
    assert bool(warning) == (fields == {"auth_off": True})


def test_create_app_refuses_a_network_bind_without_credentials(make_app: MakeApp) -> None:
    with pytest.raises(AngoraError, match="ANGORA_AUTH_TOKEN"):
        make_app(bind="0.0.0.0")
    assert make_app(bind="0.0.0.0", auth_off=True).test_client().get("/healthz").status_code == 200


@pytest.mark.parametrize("argv,env", [(["web", "--host", "0.0.0.0"], {}), (["up", "--no-scheduler"],
                                                                           {"ANGORA_BIND": "0.0.0.0"})])
def test_cli_refuses_a_network_bind_without_credentials(angora_env: dict[str, str], argv: list[str],
                                                        env: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "angora_rq.cli", *argv], env=dict(angora_env, **env),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ANGORA_AUTH_TOKEN" in lines[0], out.stderr[-2000:]


# -- Host allow-list ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,url", [("get", "/healthz"), ("get", "/"), ("get", "/api/v1/jobs"),
                                        ("post", "/api/v1/messages"), ("post", "/send"), ("get", "/rq/"),
                                        ("get", "/static/angora.css")])
def test_dns_rebinding_gets_400_json(make_app: MakeApp, r: redis.Redis, keys: Keys, method: str,
                                     url: str) -> None:
    """With auth off on loopback, a page whose name points at 127.0.0.1 reaches nothing (before: 202)."""
    client = make_app().test_client()
    resp = getattr(client, method)(url, json={"msg": "say.hello"}, headers={"Host": "evil.example:5391"})
    assert resp.status_code == 400 and resp.get_json()["error"] == "unknown Host header"
    assert r.xlen(keys.stream()) == 0


def test_fast_lane_checks_the_host_too(make_app: MakeApp, r: redis.Redis, keys: Keys) -> None:
    client = make_app().test_client()
    resp = client.post("/send", data=b"msg=say.hello", headers={**FORM, "Host": "evil.example"})
    assert resp.status_code == 400 and r.xlen(keys.stream()) == 0
    assert client.post("/send", data=b"msg=say.hello", headers={**FORM, "Host": "127.0.0.1:5000"}).status_code == 202
    assert client.post("/send", data=b"msg=say.hello", headers={**FORM, "Host": "[::1]:5000"}).status_code == 202


def test_allowed_hosts_setting(make_app: MakeApp) -> None:
    client = make_app(allowed_hosts=("angora.example.com", ".corp.example")).test_client()
    assert client.get("/healthz", headers={"Host": "angora.example.com"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "ci.corp.example:8080"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 400
    assert client.get("/healthz", headers={"Host": "angora.example.com.evil.example"}).status_code == 400
    anywhere = make_app(bind="0.0.0.0", auth_token=TOKEN).test_client()
    assert anywhere.get("/healthz", headers={"Host": "angora.herokuapp.com"}).status_code == 200


# -- proxies and cookies -------------------------------------------------------------------------------------

def test_cookies_are_secure_when_the_original_request_was_https(make_app: MakeApp) -> None:
    behind = make_app(auth_token=TOKEN, proxy_hops=1).test_client()
    resp = login(behind, **{"X-Forwarded-Proto": "https"})
    assert resp.status_code == 302 and "Secure" in resp.headers["Set-Cookie"]
    plain = make_app(auth_token=TOKEN).test_client()  # no proxy configured: the header is not believed
    resp = login(plain, **{"X-Forwarded-Proto": "https"})
    assert resp.status_code == 302 and "Secure" not in resp.headers["Set-Cookie"]


# -- sessions and throttling -----------------------------------------------------------------------------------

def test_session_key_is_random_shared_and_never_the_token(make_app: MakeApp, r: redis.Redis, keys: Keys) -> None:
    first, second = make_app(auth_token=TOKEN), make_app(auth_token="other")
    login(first.test_client())
    key = r.get(keys.web_secret())
    assert key is not None and len(bytes.fromhex(key.decode())) == 32
    assert first.secret_key == bytes.fromhex(key.decode())
    second.test_client().get("/login")
    assert second.secret_key == first.secret_key  # every web process of one Angora signs with it
    assert make_app(auth_token=TOKEN, secret_key="configured").secret_key == "configured"


def test_logout_revokes_the_session_server_side(make_app: MakeApp) -> None:
    app = make_app(auth_token=TOKEN)
    client = app.test_client()
    login(client)
    cookie = client.get_cookie("angora_session")
    assert cookie is not None and client.get("/api/v1/jobs").status_code == 200
    client.post("/logout", data={"csrf_token": csrf(client)}, headers=BROWSER)
    replay = app.test_client()
    replay.set_cookie("angora_session", cookie.value)  # the cookie as it was before logout
    assert replay.get("/api/v1/jobs").status_code == 401


def test_failed_logins_are_throttled_per_address(make_app: MakeApp) -> None:
    from angora_rq.web.auth import LOGIN_LIMIT

    app = make_app(auth_token=TOKEN, proxy_hops=1)
    client = app.test_client()
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(LOGIN_LIMIT):
        assert login(client, token="guess", **attacker).status_code == 401
    resp = login(client, **attacker)  # even the right token, now
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    api = client.get("/api/v1/jobs", headers={**BEARER, **attacker})
    assert api.status_code == 429 and int(api.headers["Retry-After"]) > 0
    fast = client.post("/send", data=b"msg=say.hello", headers={**BEARER, **attacker, **FORM})
    assert fast.status_code == 429
    assert client.get("/healthz", headers={**BEARER, **attacker}).get_json() == {"status": "degraded"}
    other = {"X-Forwarded-For": "198.51.100.7"}
    assert client.get("/api/v1/jobs", headers={**BEARER, **other}).status_code == 200
    assert login(app.test_client(), **other).status_code == 302


def test_wrong_bearer_tokens_count_as_failed_logins(make_app: MakeApp) -> None:
    from angora_rq.web.auth import LOGIN_LIMIT

    client = make_app(auth_token=TOKEN).test_client()
    for _ in range(LOGIN_LIMIT):
        assert client.get("/api/v1/jobs", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert client.get("/api/v1/jobs", headers=BEARER).status_code == 429
    assert client.post("/send", data=b"msg=say.hello", headers={**BEARER, **FORM}).status_code == 429


def test_foreign_origin_is_refused_even_with_the_token(make_app: MakeApp) -> None:
    client = make_app(auth_token=TOKEN).test_client()
    login(client)
    headers = {"Origin": "https://evil.example", "X-CSRF-Token": csrf(client)}
    assert client.post("/api/v1/messages", json={"msg": "say.hello"}, headers=headers).status_code == 403
    headers["Origin"] = "http://localhost"
    assert client.post("/api/v1/messages", json={"msg": "say.hello"}, headers=headers).status_code == 202


# -- /healthz ----------------------------------------------------------------------------------------------

def test_healthz_details_need_credentials(make_app: MakeApp, r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.heartbeats(), "worker:secret-host.1234", "1")
    client = make_app(auth_token=TOKEN).test_client()
    anonymous = client.get("/healthz")
    assert anonymous.status_code == 200 and anonymous.get_json() == {"status": "degraded"}
    assert "secret-host" not in anonymous.get_data(as_text=True)
    detailed = client.get("/healthz", headers=BEARER).get_json()
    assert detailed["workers"][0]["name"] == "secret-host.1234"
    assert make_app().test_client().get("/healthz").get_json()["workers"]  # auth off: nothing to hide


# -- headers -------------------------------------------------------------------------------------------------

PAGES = ["/", "/jobs/hello", "/runs", "/workflows", "/schedules", "/config", "/messages/new", "/login", "/nope",
         "/api/v1/jobs", "/static/angora.css", "/rq/", "/rq/0/view/workers", "/rq/0/data/queues.json"]


@pytest.mark.parametrize("url", PAGES)
def test_security_headers_on_every_page(make_app: MakeApp, url: str) -> None:
    client = make_app(auth_token=TOKEN).test_client()
    login(client)
    resp = client.get(url, headers={"Accept": "text/html"})
    assert resp.status_code in (200, 404)
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
    assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"]
    if resp.mimetype == "text/html":
        html = resp.get_data(as_text=True)
        scripts = re.findall(r"<script\b([^>]*)>", html)
        if url.startswith("/rq/"):  # rq-dashboard: its inline script runs by the page's nonce only
            nonce = re.search(r"'nonce-([^']+)'", csp).group(1)  # type: ignore[union-attr]
            assert all("src=" in a or "text/template" in a or f'nonce="{nonce}"' in a for a in scripts)
        else:  # Angora's own pages: no inline script, no inline style at all
            assert all("src=" in a or "application/json" in a for a in scripts), scripts
            assert "<style" not in html and " style=" not in html
            assert "script-src 'self';" in csp


# -- rq-dashboard ---------------------------------------------------------------------------------------------

def _failed_rq_job(app: Flask) -> str:
    """An execution run by hand and its RQ job put in the failed registry of queue `default`, as a failure does."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    ext = app.extensions["angora"]
    xid = ext.control.run_job(ext.snapshot(), "hello", None, None)["execution_id"]
    ext.r.lrem("rq:queue:default", 0, xid)
    FailedJobRegistry("default", connection=ext.r).add(Job.fetch(xid, connection=ext.r), ttl=600)
    return str(xid)


def test_rq_dashboard_changes_nothing_through_get(make_app: MakeApp) -> None:
    """Before: a logged-in GET /rq/requeue/default from any page answered 200 and requeued the failed jobs."""
    app = make_app(auth_token=TOKEN, rq_dashboard="full")
    _failed_rq_job(app)
    client = app.test_client()
    login(client)
    resp = client.get("/rq/requeue/default", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 405
    assert app.extensions["angora"].r.llen("rq:queue:default") == 0


def test_rq_dashboard_requeue_is_refused(make_app: MakeApp) -> None:
    app = make_app(auth_token=TOKEN, rq_dashboard="full")
    xid = _failed_rq_job(app)
    client = app.test_client()
    login(client)
    headers = {**BROWSER, "X-CSRF-Token": csrf(client), "Accept": "application/json"}
    for url in (f"/rq/job/{xid}/requeue", "/rq/requeue/default"):
        resp = client.post(url, headers=headers)
        assert resp.status_code == 409 and "retry" in resp.get_json()["detail"]
    assert app.extensions["angora"].r.llen("rq:queue:default") == 0


def test_rq_dashboard_is_read_only_by_default(make_app: MakeApp) -> None:
    client = make_app(auth_token=TOKEN).test_client()
    login(client)
    headers = {**BROWSER, "X-CSRF-Token": csrf(client), "Accept": "application/json"}
    assert client.post("/rq/queue/default/compact", headers=headers).status_code == 403
    assert client.get("/rq/0/data/queues.json").status_code == 200
    off = make_app(auth_token=TOKEN, rq_dashboard="off").test_client()
    login(off)
    assert off.get("/rq/", headers={"Accept": "text/html"}).status_code == 404


@pytest.mark.parametrize("url", [
    "/rq/queue/%00/compact", "/rq/queue/nosuch/compact", "/rq/queue/" + "q" * 300 + "/compact",
    "/rq/job/%ff%fe/requeue", "/rq/queue/x/nope/empty", "/rq/0/data/job/*.json", "/rq/0/view/job/%20",
    "/rq/0/data/jobs/default/queued/x/asc/1.json", "/rq/0/data/jobs/default/nope/8/asc/1.json",
    "/rq/0/data/jobs/default/queued/8/up/1.json", "/rq/0/data/jobs/default/queued/8/asc/0.json"])
def test_rq_dashboard_bad_input_is_4xx(make_app: MakeApp, url: str) -> None:
    """Each of these was a 503 ("internal error"): a retry-later answer to input that can never work."""
    client = make_app(rq_dashboard="full").test_client()
    client.get("/rq/")
    if "/data/" in url or "/view/" in url:
        resp = client.get(url)
    else:
        resp = client.post(url, headers={**BROWSER, "X-CSRF-Token": csrf(client)})
    assert 400 <= resp.status_code < 500, resp.get_data(as_text=True)[:300]


def test_rq_dashboard_compacts_an_empty_queue(make_app: MakeApp) -> None:
    app = make_app(rq_dashboard="full")
    _failed_rq_job(app)  # the queue `default` exists, its list is empty
    client = app.test_client()
    client.get("/rq/")
    compact = f"/rq/queue/{app.extensions['angora'].keys.rq_name('default')}/compact"  # RQ's name of the queue
    resp = client.post(compact, headers={**BROWSER, "X-CSRF-Token": csrf(client)})
    assert resp.status_code == 200 and resp.get_json() == {"status": "OK"}
