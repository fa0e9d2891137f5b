"""Counts labelled for what they count, settled attempts, the definitions-errors banner, error pages, the favicon
and the way back from rq-dashboard (Flask's test client on a real Redis)."""
# ruff: noqa: F811  (the fixtures imported from test_ui_pages are parameters of the tests below)
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import redis
from flask import Flask
from flask.testing import FlaskClient

from angora_rq.core.schema import Exec
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.web import create_app
from test_ui_pages import Finish, app, client, config_dir, finish, page, run_job, settings  # noqa: F401 (fixtures)


def _next(r: redis.Redis, keys: Keys, xid: str) -> str:
    return (r.hget(keys.execution(xid), Exec.next) or b"").decode()


def _status(r: redis.Redis, keys: Keys, xid: str) -> str:
    return (r.hget(keys.execution(xid), Exec.status) or b"").decode()


def test_dashboard_counts_executions_under_that_name(client: FlaskClient, finish: Finish) -> None:
    started = run_job(client)
    finish(started["execution_id"])
    html = page(client, "/")
    assert re.search(r'<th scope="col" class="num"><abbr title="[^"]+">Executions</abbr></th>', html)
    assert '<th scope="col" class="num">Runs</th>' not in html


def test_run_page_counts_executions_under_that_name(client: FlaskClient) -> None:
    html = page(client, f"/runs/{run_job(client)['run_id']}")
    assert re.search(r'<th scope="col" class="num"><abbr title="[^"]+">Executions</abbr></th>', html)
    assert ">Attempts</th>" not in html


def test_a_replayed_attempt_shows_failed_once_its_replay_has_ended(client: FlaskClient, finish: Finish,
                                                                   r: redis.Redis, keys: Keys) -> None:
    first = run_job(client, "load")["execution_id"]  # `load` replays without limit
    assert finish(first, exit_code=1) == "replaying"
    second = _next(r, keys, first)
    assert finish(second, exit_code=1) == "replaying"
    assert _status(r, keys, first) == "failed"  # its replay ran: no longer `replaying`
    third = _next(r, keys, second)
    assert finish(third) == "succeeded"
    assert [_status(r, keys, x) for x in (first, second, third)] == ["failed", "failed", "succeeded"]
    html = page(client, f"/executions/{third}")
    chain = html.split('<ol class="chain">')[1].split("</ol>")[0]
    assert "replaying" not in chain and chain.count("st-failed") == 2


def test_killing_a_waiting_replay_settles_the_attempt_before_it(client: FlaskClient, finish: Finish,
                                                               r: redis.Redis, keys: Keys) -> None:
    first = run_job(client, "load")["execution_id"]
    finish(first, exit_code=1)
    second = _next(r, keys, first)
    resp = client.application.test_client().post(f"/api/v1/executions/{second}/kill")
    assert resp.status_code == 200, resp.get_json()
    assert (_status(r, keys, first), _status(r, keys, second)) == ("failed", "killed")


def test_dashboard_warns_when_the_definition_files_have_errors(client: FlaskClient, config_dir: Path) -> None:
    assert 'id="definition-errors"' not in page(client, "/")
    (config_dir / "broken.yml").write_text("- name: bad\n  triggers: [x]\n  comand: echo\n")
    client.application.extensions["angora"].definitions.refresh(force=True)
    html = page(client, "/")
    banner = html.split('id="definition-errors"')[1].split("</p>")[0]
    assert re.search(r"have 2\s+errors:", banner)
    assert 'href="/config"' in banner and "stays in force" in banner


def test_unknown_urls_get_a_styled_404_page(client: FlaskClient) -> None:
    html = page(client, "/no/such/page", 404)
    assert 'href="/static/angora.css"' in html and "<h1>Not found</h1>" in html
    assert "There is no page at /no/such/page." in html and '<nav aria-label="Main">' in html
    api = client.get("/api/v1/nope")
    assert api.status_code == 404 and api.get_json()["error"]


def test_unexpected_errors_get_a_styled_page(app: Flask) -> None:
    def broken() -> str:
        raise RuntimeError("bug")
    app.add_url_rule("/broken", "broken", broken)
    resp = app.test_client().get("/broken", headers={"Accept": "text/html"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 503 and 'href="/static/angora.css"' in html
    assert "internal error; it has been logged" in html and "RuntimeError" not in html


def test_error_page_is_styled_even_when_redis_is_down(settings: Settings) -> None:
    from angora_rq.processes.redis_server import free_port

    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    resp = create_app({"SETTINGS": down, "TESTING": True}).test_client().get("/", headers={"Accept": "text/html"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 503 and 'href="/static/angora.css"' in html and "Redis is not reachable" in html


def test_favicon_is_an_icon_and_needs_no_login(client: FlaskClient, settings: Settings) -> None:
    for c in (client, create_app({"SETTINGS": replace(settings, auth_token="s3cret")}).test_client()):
        resp = c.get("/favicon.ico")
        assert resp.status_code == 200 and resp.mimetype == "image/vnd.microsoft.icon"
        assert resp.data[:4] == b"\0\0\1\0"
    assert client.get("/static/favicon.ico").status_code == 200  # what rq-dashboard's pages name


def test_rq_dashboard_links_back_to_angora(client: FlaskClient) -> None:
    html = client.get("/rq/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert re.search(r'<a class="navbar-brand" href="/" title="Back to Angora">&larr; Angora</a>', html)
    assert 'href="/rq/0/view/workers"' in html


def test_the_navbar_override_matches_the_installed_rq_dashboard() -> None:
    """Angora's copy of rq-dashboard's navbar differs only in the brand: an upgrade that changes it shows here."""
    import rq_dashboard

    theirs = (Path(rq_dashboard.__file__).parent / "templates" / "rq_dashboard" / "navbar.html").read_text()
    ours = (Path(__file__).resolve().parents[2] / "angora_rq" / "web" / "templates" / "rq_dashboard"
            / "navbar.html").read_text()
    ours_lines = [line for line in ours.splitlines()[1:] if "Angora" not in line and "navbar-text" not in line]
    theirs_lines = [line for line in theirs.splitlines() if 'class="navbar-brand"' not in line]
    assert ours_lines == theirs_lines


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_opening_send_is_taken_to_the_form(client: FlaskClient) -> None:
    """The README's `curl -d ... /send` address, opened in a browser, answered raw JSON 'Method Not Allowed'."""
    resp = client.get("/send", headers={"Accept": BROWSER_ACCEPT})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/messages/new")
    assert "Send" in page(client, resp.headers["Location"])


def test_a_script_getting_send_is_told_to_post(client: FlaskClient) -> None:
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"},
                    {"Accept": BROWSER_ACCEPT, "Authorization": "Bearer x"}):
        resp = client.get("/send", headers=headers)
        assert resp.status_code in (401, 405), (headers, resp.status_code)
        assert resp.is_json and resp.get_json()["error"], headers
        if resp.status_code == 405:
            assert "GET" not in resp.headers["Allow"] and "POST" in resp.headers["Allow"]
