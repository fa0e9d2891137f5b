"""The HTML pages through Flask's test client, with data written to a real Redis by Angora's own code."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core.schema import Exec, Run
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.store.state import State, load_claimed
from angora_rq.web import create_app

JOBS = """\
- name: extract
  description: get the rows
  triggers: [etl.start]
  command: [sh, -c, "echo extract"]
  replay: 0
  messages: [etl.extracted]
- name: load
  triggers: [etl.extracted]
  command: echo load
  messages: [etl.loaded]
- name: report
  triggers: [etl.loaded]
  command: echo report
- name: nightly_only
  triggers: [time.*]
  command: echo tick
- schedule: hourly
  every: 1h
  message: etl.start
  params: {ROWS: 5}
"""

EVIL = "<script>alert('pwned')</script>"


@dataclass
class Outcome:
    """A finished command, as state.finalize needs it."""

    exit_code: Optional[int]
    reason: str = "exit"
    signal: Any = None
    started: float = 0.0
    ended: float = 0.0
    duration: float = 0.25
    tail: str = ""
    output: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.reason == "exit"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A definitions folder: a three-job chain, a pattern-triggered job and a schedule."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "jobs.yml").write_text(JOBS)
    return folder


@pytest.fixture
def settings(redis_url: str, keys: Keys, tmp_path: Path, config_dir: Path) -> Settings:
    """Settings on this test's Redis db, prefix and definitions."""
    return Settings(redis_url=redis_url, prefix=keys.prefix, config_path=config_dir, data_dir=tmp_path / "data")


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app({"SETTINGS": settings, "TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


Finish = Callable[..., str]


@pytest.fixture
def finish(r: redis.Redis, keys: Keys, settings: Settings) -> Finish:
    """Finish a queued execution the way a worker does (state.finalize); returns its final status."""
    def done(xid: str, exit_code: int = 0, tail: str = "ok\n", reason: str = "exit") -> str:
        ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
        now = time.time()
        with r.pipeline() as pipe:
            status = State(keys, settings).finalize(pipe, ex, Outcome(exit_code, reason, started=now - 0.25,
                                                                      ended=now, tail=tail), now, worker="w1")
            pipe.execute()
        return status
    return done


def run_job(client: FlaskClient, name: str = "extract", **body: Any) -> dict[str, str]:
    """Start a job by hand through the API as a script would (a fresh client: no cookie, no CSRF needed)."""
    resp = client.application.test_client().post(f"/api/v1/jobs/{name}/run", json=body)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()


def found(pattern: str, text: str) -> str:
    """The first group of `pattern` in `text` (failing the test when absent)."""
    match = re.search(pattern, text, re.S)
    assert match, f"{pattern!r} not found"
    return match.group(1)


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    """GET a page as a browser would; assert the status and that it is HTML; return the text."""
    resp = client.get(url, headers={"Accept": "text/html"})
    assert resp.status_code == status, (url, resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.mimetype == "text/html"
    return resp.get_data(as_text=True)


# -- every page renders ----------------------------------------------------------------------------------

def test_every_page_renders_with_real_data(client: FlaskClient, finish: Finish) -> None:
    started = run_job(client, params={"DAY": "2024-01-01"})
    assert finish(started["execution_id"]) == "succeeded"
    run_id, xid = started["run_id"], started["execution_id"]
    for url in ["/", "/?status=failed", "/jobs/extract", "/jobs/extract?page=2", "/jobs/report", "/runs",
                "/runs?status=succeeded", "/runs?job=extract&page=2", f"/runs/{run_id}", f"/executions/{xid}",
                "/workflows", "/workflows?topic=etl.extracted&job=extract", "/workflows?job=load",
                "/schedules", "/config", "/messages/new", "/messages/new?topic=etl.start"]:
        html = page(client, url)
        assert "<nav aria-label=\"Main\">" in html and 'name="csrf-token"' in html, url
        assert "Traceback" not in html


def test_dashboard_lists_jobs_with_status_run_and_rate(client: FlaskClient, finish: Finish) -> None:
    ok = run_job(client)
    finish(ok["execution_id"])
    bad = run_job(client)
    finish(bad["execution_id"], exit_code=3)
    html = page(client, "/")
    row = re.search(r'<tr data-status="([^"]+)">\s*<th scope="row"><a href="/jobs/extract">', html)
    assert row and row.group(1) == "failed"
    assert "50 %" in html
    assert f'href="/runs/{bad["run_id"]}"' in html
    assert re.search(r'>\s*0 running</a>', html) and re.search(r'>\s*1 failed</a>', html)


def test_running_execution_shows_live_in_dashboard_and_header(client: FlaskClient, r: redis.Redis,
                                                              keys: Keys) -> None:
    xid = run_job(client)["execution_id"]
    r.hset(keys.execution(xid), mapping={Exec.status: "running", Exec.started: repr(time.time())})
    html = page(client, "/")
    assert '<tr data-status="running">' in html
    assert re.search(r'>\s*1 running</a>', html)
    job_html = page(client, "/jobs/extract")
    assert 'data-running="yes"' in job_html and f'data-live="/api/v1/executions/{xid}"' in job_html


def test_paused_job_is_marked(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    r.sadd(keys.paused_jobs(), "load")
    html = page(client, "/")
    assert '<tr data-status="never paused">' in html
    assert "paused</span>" in page(client, "/jobs/load")
    assert "paused</span>" not in page(client, "/jobs/extract")


def test_job_page_has_definition_links_history_and_run_form(client: FlaskClient, finish: Finish) -> None:
    ids = [run_job(client)["execution_id"] for _ in range(30)]
    for xid in ids[-3:]:
        finish(xid, exit_code=1 if xid == ids[-1] else 0)
    html = page(client, "/jobs/extract")
    assert "<code class=\"cmd\">sh -c &#39;echo extract&#39;</code>" in html
    assert 'href="/workflows?topic=etl.start&amp;job=extract"' in html
    assert 'href="/workflows?topic=etl.extracted&amp;job=extract"' in html
    assert 'href="/jobs/load"' in html
    assert 'data-post="/api/v1/jobs/extract/run"' in html and 'data-kind="params"' in html
    assert html.count('href="/executions/') == 25 + 1  # one page of history + the latest output's link
    assert html.index(ids[-1][:12]) < html.index(ids[-2][:12])  # newest first
    assert "Page 1 of 2 (30 in all)" in html
    second = page(client, "/jobs/extract?page=2")
    assert ids[0][:12] in second and ids[-1][:12] not in second.split("<h2 id=\"hist-h\">")[1]


def test_job_neighbours_are_links(client: FlaskClient) -> None:
    html = page(client, "/jobs/load")
    assert 'href="/jobs/extract"' in html and 'href="/jobs/report"' in html


def test_run_page_embeds_the_run_for_the_graph_and_lists_jobs(client: FlaskClient, finish: Finish) -> None:
    started = run_job(client)
    finish(started["execution_id"])
    html = page(client, f"/runs/{started['run_id']}")
    data = json.loads(found(r'<script type="application/json" id="graph-data">(.*?)</script>', html))
    assert data["run_id"] == started["run_id"]
    assert data["plan"]["jobs"][0] == "extract" and "load" in data["plan"]["jobs"]
    assert data["jobs"]["extract"]["status"] == "succeeded"
    assert f'data-poll="/api/v1/runs/{started["run_id"]}"' in html
    assert '<tr data-job="extract">' in html and '<tr data-job="report">' in html
    assert f'data-post="/api/v1/runs/{started["run_id"]}/cancel"' in html
    assert f'data-post="/api/v1/runs/{started["run_id"]}/cancel?kill=true"' in html  # "Cancel and kill"
    assert 'src="/static/graph.js"' in html


def test_runs_list_filters(client: FlaskClient, finish: Finish) -> None:
    a = run_job(client)
    finish(a["execution_id"], exit_code=2)
    b = run_job(client, "report")
    html = page(client, "/runs")
    assert a["run_id"] in html and b["run_id"] in html
    failed = page(client, "/runs?status=failed")
    assert a["run_id"] in failed and b["run_id"] not in failed
    c = run_job(client, "nightly_only")
    by_job = page(client, "/runs?job=nightly_only")
    assert c["run_id"] in by_job and a["run_id"] not in by_job and b["run_id"] not in by_job


def test_runs_list_shows_each_runs_duration_or_its_time_so_far(client: FlaskClient, finish: Finish,
                                                               r: redis.Redis, keys: Keys) -> None:
    done = run_job(client, "report")  # one job: its run ends with it
    finish(done["execution_id"])
    r.hset(keys.run(done["run_id"]), Run.created, repr(float(r.hget(keys.run(done["run_id"]), Run.ended)) - 75))
    live = run_job(client)
    r.hset(keys.run(live["run_id"]), Run.created, repr(time.time() - 130))
    html = page(client, "/runs")
    assert '<th scope="col">Duration</th>' in html

    def cell(run_id: str) -> str:
        return found(rf'href="/runs/{run_id}">.*?<td>\s*<time.*?</td>\s*<td class="num">(.*?)</td>', html)

    assert cell(done["run_id"]) == "1 m 15 s"
    assert re.fullmatch(r'2 m \d\d s <span class="muted small">so far</span>', cell(live["run_id"]))
    r.hset(keys.run("old-run"), mapping={Run.created: "1000.0", Run.active: "0", Run.topic: "etl.start"})
    r.zadd(keys.runs(), {"old-run": 1000.0})
    html = page(client, "/runs")
    assert cell("old-run") == "\u2013"  # recorded before runs kept an end time: a dash


def test_run_page_shows_a_finished_runs_duration(client: FlaskClient, finish: Finish, r: redis.Redis,
                                                 keys: Keys) -> None:
    done = run_job(client, "report")
    live = run_job(client)
    assert 'id="run-duration"' not in page(client, f"/runs/{done['run_id']}")  # still running: no end yet
    finish(done["execution_id"])
    r.hset(keys.run(done["run_id"]), Run.created, repr(float(r.hget(keys.run(done["run_id"]), Run.ended)) - 75))
    assert found(r'id="run-duration">(.*?)</dd>', page(client, f"/runs/{done['run_id']}")) == "1 m 15 s"
    assert 'id="run-duration"' not in page(client, f"/runs/{live['run_id']}")  # a live page stays the same (304s)


def test_execution_page_has_timings_actions_and_attempt_chain(client: FlaskClient, finish: Finish,
                                                              r: redis.Redis, keys: Keys) -> None:
    first = run_job(client, "load")["execution_id"]
    assert finish(first, exit_code=7, tail="boom\n") == "replaying"
    second = to_str(r.hget(keys.execution(first), Exec.next))
    html = page(client, f"/executions/{first}")
    assert "boom" in html and ">7<" in html
    assert f'data-post="/api/v1/executions/{first}/retry"' in html
    assert f'data-post="/api/v1/executions/{first}/skip"' in html
    assert f'href="/executions/{second}">attempt 2</a>' in html
    waiting = page(client, f"/executions/{second}")
    assert f'data-post="/api/v1/executions/{second}/kill"' in waiting
    assert f'href="/executions/{first}">attempt 1</a>' in waiting
    assert 'data-running="yes"' in waiting


def test_log_output_is_escaped(client: FlaskClient, finish: Finish) -> None:
    started = run_job(client)
    finish(started["execution_id"], tail=f"line 1\n{EVIL}\n")
    for url in (f"/executions/{started['execution_id']}", "/jobs/extract"):
        html = page(client, url)
        assert EVIL not in html
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html


def test_params_and_names_are_escaped(client: FlaskClient, finish: Finish) -> None:
    started = run_job(client, params={"NOTE": EVIL})
    html = page(client, f"/runs/{started['run_id']}")
    assert EVIL not in html
    assert "<\\/script>" not in html  # the embedded JSON escapes '<' itself (\u003c)


def test_workflows_page_embeds_the_graph_and_highlights_a_topic(client: FlaskClient) -> None:
    html = page(client, "/workflows?topic=etl.extracted&job=extract")
    data = json.loads(found(r'id="graph-data">(.*?)</script>', html))
    assert data["focus"] == "extract"
    assert data["marked"] == ["extract", "load"]
    assert data["graph"]["nodes"] and data["graph"]["edges"]
    pattern = json.loads(found(r'id="graph-data">(.*?)</script>', page(client, "/workflows?topic=time.*")))
    assert pattern["marked"] == ["nightly_only"]


def test_schedules_page_lists_schedules_with_next_fire_times(client: FlaskClient) -> None:
    html = page(client, "/schedules")
    assert "hourly" in html and "every 1 h 00 m" in html
    assert 'href="/workflows?topic=etl.start"' in html
    assert html.count('<time datetime=') >= 5
    assert "No scheduler is running" in html


def test_schedules_page_says_why_a_tick_was_skipped(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.schedule("hourly"), mapping={"last": 1_700_000_000_000, "last_skipped": 1_700_000_000_000,
                                             "skipped": 1, "skip_reason": "BUDGET work 7 7"})
    html = page(client, "/schedules")
    assert "work budget used up: 7 of 7 accepted messages and executions not finished" in html


def test_dashboard_shows_how_much_of_each_budget_is_used(app: Flask, client: FlaskClient, r: redis.Redis,
                                                         keys: Keys) -> None:
    r.set(keys.work(), 5)
    limit = app.extensions["angora"].settings.backlog
    html = page(client, "/")
    budgets = found(r'<p id="budgets"[^>]*>(.*?)</p>', html)
    assert re.search(rf"Accepted work not finished: <span[^>]*>5 of {limit} ", budgets)
    assert re.search(r"Redis memory: <span[^>]*>[0-9.]+ MiB of [0-9.]+ MiB \([0-9.]+%, (maxmemory|system memory)\)",
                     budgets), budgets


def test_send_page_posts_to_the_api_and_follows_to_the_run(client: FlaskClient) -> None:
    html = page(client, "/messages/new?topic=etl.start")
    assert 'data-post="/api/v1/messages"' in html and 'data-then="/runs/{run_id}"' in html
    assert 'value="etl.start"' in html and '<option value="etl.start">' in html
    assert '<label for="msg">' in html


def test_forms_post_with_the_session_csrf_token(client: FlaskClient) -> None:
    """What angora.js does: read the token from the page's <meta>, send it as X-CSRF-Token."""
    html = page(client, "/messages/new")
    token = found(r'<meta name="csrf-token" content="([^"]+)">', html)
    browser = {"Origin": "http://localhost", "Accept": "application/json"}
    refused = client.post("/api/v1/messages", json={"msg": "etl.start"}, headers=browser)
    assert refused.status_code == 403
    sent = client.post("/api/v1/messages", json={"msg": "etl.start", "params": {"A": "1"}},
                       headers={**browser, "X-CSRF-Token": token})
    assert sent.status_code == 202
    assert page(client, f"/runs/{sent.get_json()['run_id']}")


def test_config_page_shows_version_files_and_errors(client: FlaskClient, config_dir: Path) -> None:
    html = page(client, "/config")
    assert "jobs.yml" in html and "None." in html
    (config_dir / "broken.yml").write_text("- name: bad\n  triggers: [x]\n  comand: echo\n")
    client.application.extensions["angora"].definitions.refresh(force=True)
    html = page(client, "/config")
    assert re.search(r'<code class="where">[^<]*broken\.yml:\d+:\d+</code>', html), html
    assert "error(s); the loaded version stays in force" in html


@pytest.mark.parametrize("url", ["/jobs/nope", "/runs/no-such-run", "/runs/bad%20id",
                                 "/executions/0123456789abcdef0123456789abcdef", "/executions/x.y"])
def test_unknown_things_are_a_friendly_404(client: FlaskClient, url: str) -> None:
    html = page(client, url, 404)
    assert "<h1>Not found</h1>" in html and 'href="/"' in html and "Traceback" not in html


def test_without_definitions_pages_say_so(redis_url: str, keys: Keys, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, prefix=keys.prefix, config_path=tmp_path / "missing",
                        data_dir=tmp_path / "data")
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    html = page(client, "/", 503)
    assert "<h1>Unavailable</h1>" in html and 'href="/config"' in html
    assert "no definitions" in html
    page(client, "/config")
    page(client, "/messages/new")
    page(client, "/runs")


def test_static_files_are_served(client: FlaskClient) -> None:
    for name in ("angora.css", "angora.js", "graph.js", "angora.svg"):
        assert client.get(f"/static/{name}").status_code == 200, name


def test_with_auth_pages_need_a_login_and_offer_a_logout(settings: Settings) -> None:
    from dataclasses import replace

    client = create_app({"SETTINGS": replace(settings, auth_token="s3cret"), "TESTING": True}).test_client()
    resp = client.get("/jobs/extract", headers={"Accept": "text/html"})
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    login = page(client, "/login?next=/jobs/extract")
    token = found(r'name="csrf_token" value="([^"]+)"', login)
    resp = client.post("/login", data={"token": "s3cret", "csrf_token": token, "next": "/jobs/extract"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/jobs/extract")
    html = page(client, "/jobs/extract")
    assert "Log out token" in html and 'action="/logout"' in html


def test_job_page_offers_pause_then_resume(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    """Pausing is a button on the job page, and a paused job says so and offers Resume."""
    page = client.get("/jobs/extract").get_data(as_text=True)
    assert "Pause extract" in page and "/api/v1/jobs/extract/pause" in page
    r.sadd(keys.paused_jobs(), "extract")
    page = client.get("/jobs/extract").get_data(as_text=True)
    assert "Resume extract" in page and "/api/v1/jobs/extract/resume" in page and "badge paused" in page
