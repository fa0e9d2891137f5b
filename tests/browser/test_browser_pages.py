"""Every page in a real headless Chromium against the Procfile's web server and real matcher, worker and scheduler
processes (one set for the module): live updates without reload, the live indicator, keyboard shortcuts, the run
timeline and job chart, axe-core's accessibility rules (light and dark), a screenshot of each page in test-output/.
"""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Iterator

import pytest
import redis

from angora_rq.web.ui import duration
from angora_testkit import System, procfile_web, write_config
from test_browser import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, answers, screenshot, wait_until

JOBS = """\
- name: extract
  description: get the rows
  triggers: [demo.start]
  command: [sh, -c, 'echo extracting; sleep 0.3']
  messages: [demo.extracted]
- name: load
  triggers: [demo.extracted]
  command: [sh, -c, 'echo loading']
- name: flaky
  triggers: [demo.flaky]
  command: [sh, -c, 'echo boom; exit 3']
  replay: 1
  replay_delay: 0.1
- name: slow
  triggers: [demo.slow]
  command: [sh, -c, 'echo started; sleep 2; echo done']
- schedule: hourly
  every: 1h
  message: demo.start
- schedule: often
  every: 5s
  message: demo.tick
"""

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def angora(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, System]]:
    """The Procfile's web line (granian, 2 workers) with a matcher, a worker and a scheduler, on db 0 of the
    session's Redis (test_web_server's module uses it too, one module at a time) under their own prefix."""
    import os
    import uuid

    url = f"{redis_server.url}/0"
    redis.Redis.from_url(url).flushdb()  # a server this session started
    tmp = tmp_path_factory.mktemp("pages")
    env = dict(os.environ, REDIS_URL=url, ANGORA_PREFIX=f"p{uuid.uuid4().hex[:8]}", ANGORA_DATA_DIR=str(tmp / "data"),
               PYTHONUNBUFFERED="1")
    env.pop("ANGORA_AUTH_TOKEN", None)
    env["ANGORA_AUTH"] = "off"  # the Procfile's line binds 0.0.0.0: without credentials it must be told so
    system = System(env, write_config(tmp / "config", JOBS, name="demo.yml"), tmp)
    try:
        with procfile_web(env, tmp) as (_, port):  # serves tmp/config: demo.yml and its own jobs.yml
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: answers(f"{base}/healthz"), 60, f"the Procfile's web server on {base}")
            for role in ("matcher", "worker", "scheduler"):
                system.start(role)
            yield base, system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh page; its JavaScript errors are collected on page.errors and fail the test."""
    pg = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    pg.set_default_timeout(15_000)
    yield pg
    pg.close()
    assert not errors, errors


def api(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return json.load(resp)


def finished_run(system: System, topic: str) -> dict[str, Any]:
    return system.wait_run(system.send(topic), timeout=60)


def test_the_attempts_list_reads_as_a_sequence(angora: tuple[str, System], page: Any) -> None:
    base, system = angora
    run = finished_run(system, "demo.flaky")
    attempts = sorted(system.executions(run["run_id"]), key=lambda e: e["attempt"])
    assert [e["status"] for e in attempts] == ["failed", "failed"]
    page.goto(f"{base}/executions/{attempts[1]['id']}")
    items = page.locator("ol.chain li")
    assert items.count() == 2
    assert page.eval_on_selector("ol.chain li", "li => getComputedStyle(li).listStyleType") == "none"
    assert page.eval_on_selector("ol.chain li + li", "li => getComputedStyle(li, '::before').content") == '"\u2192"'
    first, second = (items.nth(i).bounding_box() for i in range(2))
    assert first["x"] + first["width"] < second["x"]  # side by side, apart
    assert [t.split() for t in items.all_inner_texts()] == [["attempt", "1", "failed"], ["attempt", "2", "failed"]]
    screenshot(page, "page-execution-attempts.png")


def ids_of(base: str, system: System) -> dict[str, str]:
    """A finished run of the demo chain, and ids to open pages with."""
    run = finished_run(system, "demo.start")
    ex = system.executions(run["run_id"])
    return {"run": run["run_id"], "execution": ex[0]["id"]}


PAGES = [
    ("dashboard", "/"), ("runs", "/runs"), ("runs-failed", "/runs?status=failed"), ("run", "/runs/{run}"),
    ("execution", "/executions/{execution}"), ("job", "/jobs/extract"), ("workflows", "/workflows"),
    ("schedules", "/schedules"), ("config", "/config"), ("send", "/messages/new"), ("not-found", "/no/such/page"),
]


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page (axe-playwright-python ships axe-core)."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_axe_and_is_photographed(angora: tuple[str, System], chromium: Any, scheme: str) -> None:
    base, system = angora
    ids = ids_of(base, system)
    finished_run(system, "demo.flaky")
    pg = chromium.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    problems = {}
    try:
        for name, path in PAGES:
            pg.goto(base + path.format(**ids))
            pg.wait_for_load_state("networkidle")
            screenshot(pg, f"page-{name}-{scheme}.png")
            found = serious_violations(pg)
            if found:
                problems[name] = found
        pg.goto(base + "/rq/0/view/workers")  # rq-dashboard's own page (its markup is not ours to check)
        pg.wait_for_selector("a.navbar-brand[href='/']")
        screenshot(pg, f"page-rq-dashboard-{scheme}.png")
    finally:
        pg.close()
    assert not problems, problems
    assert not errors, errors


# -- live updates, without reload ----------------------------------------------------------------------------------

def stay(page: Any) -> None:
    """Mark the page: a reload would lose the mark."""
    page.evaluate("window.__stayed = 1")


def stayed(page: Any) -> bool:
    return page.evaluate("window.__stayed === 1")


def live_until(page: Any, condition: str, within: float = 30.0) -> None:
    """Move the page's clock (page.clock.install() before its goto) a poll interval on at a time until the JS
    expression `condition` holds: the live updates run on the page's own timers, with no wait for them."""
    deadline = time.monotonic() + within
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"{condition} did not hold within {within} s"
        page.clock.fast_forward(7000)  # longer than the slowest poll interval
        page.wait_for_timeout(100)


def test_dashboard_updates_live(angora: tuple[str, System], page: Any) -> None:
    base, system = angora
    page.clock.install()
    page.goto(base + "/")
    assert page.get_attribute("#live", "data-state") == "on" and page.is_visible("#live")
    count = "#jobs tr:has(a[href='/jobs/load']) td:last-child"
    before = int(page.inner_text(count))
    stay(page)
    finished_run(system, "demo.start")
    live_until(page, f"Number(document.querySelector(\"{count}\").textContent) === {before + 1}")
    assert stayed(page)
    screenshot(page, "live-dashboard.png")


def test_runs_list_updates_live(angora: tuple[str, System], page: Any) -> None:
    base, system = angora
    page.clock.install()
    page.goto(base + "/runs")
    stay(page)
    run_id = system.send("demo.start")
    live_until(page, f"!!document.querySelector(\"#runs-list a[href='/runs/{run_id}']\")")
    assert stayed(page)


def test_runs_list_shows_time_so_far_then_the_duration(angora: tuple[str, System], page: Any) -> None:
    base, system = angora
    run_id = system.send("demo.slow")  # sleeps 2 s
    wait_until(lambda: system.q.run(run_id)["status"] == "running", 20, f"run {run_id} to start")
    page.goto(base + "/runs")
    assert page.inner_text("#runs-list thead th:nth-child(6)") == "Duration"
    cell = f"#runs-list tr:has(a[href='/runs/{run_id}']) td:nth-child(6)"
    assert page.inner_text(cell).endswith("so far")
    stay(page)
    page.wait_for_function(f"() => /^[\\d.]+ s$/.test(document.querySelector(\"{cell}\").textContent.trim())",
                           timeout=20_000)  # the run ended: its duration, live
    assert stayed(page)
    assert float(page.inner_text(cell).split()[0]) >= 2.0


def test_run_page_draws_a_live_timeline(angora: tuple[str, System], page: Any) -> None:
    base, system = angora
    run_id = system.send("demo.slow")
    page.goto(f"{base}/runs/{run_id}")
    stay(page)
    page.wait_for_selector("#timeline g.row.st-running rect.run", timeout=20_000)
    page.wait_for_selector("#graph[data-finished='yes']", timeout=30_000)
    rows = page.eval_on_selector_all("#timeline g.row", "rs => rs.map(r => [r.getAttribute('class'), "
                                     "r.querySelectorAll('rect.run').length])")
    assert rows == [["row st-succeeded", 1]]
    assert "waited" in page.text_content("#timeline g.row title")
    assert stayed(page)
    screenshot(page, "live-run-timeline.png")


def test_timeline_axis_labels_never_read_the_same(angora: tuple[str, System], page: Any) -> None:
    """Ticks a few milliseconds apart were labelled in seconds to two decimals: "+0.01 s" three times in a row."""
    base, system = angora
    page.goto(f"{base}/runs/{system.send('demo.start')}")
    labels = page.evaluate("""() => {
        const T = window.AngoraTimeline, out = {};
        for (const span of [0.0042, 0.03, 0.07, 0.7, 3, 45, 700, 40000]) {
          const step = T.tickStep(span, 10), ticks = [];
          for (let t = 0; t <= span + step * 1e-6; t += step) ticks.push(T.tickLabel(t, step));
          out[span] = ticks;
        }
        return out;
    }""")
    for span, ticks in labels.items():
        assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), (span, ticks)
    assert labels["0.03"][:4] == ["+0 ms", "+5 ms", "+10 ms", "+15 ms"]
    assert labels["0.0042"][:3] == ["+0.0 ms", "+0.5 ms", "+1.0 ms"]
    assert labels["3"][:4] == ["+0 s", "+500 ms", "+1 s", "+1.50 s"]


def test_angora_js_writes_durations_as_the_server_does(angora: tuple[str, System], page: Any) -> None:
    """A page's live updates write durations with angora.js; the first render, with the template filter."""
    base, _ = angora
    page.goto(f"{base}/")
    values = [0, 0.0004, 0.0032, 0.0099, 0.012, 0.4567, 0.9994, 0.9996, 1, 1.254, 12.34, 245, 7380]
    written = page.evaluate("vs => vs.map(v => window.Angora.duration(v))", values)
    assert written == [duration(v) for v in values]


def test_execution_page_follows_the_execution_to_its_end(angora: tuple[str, System], page: Any) -> None:
    base, system = angora
    run_id = system.send("demo.slow")
    xid = wait_until(lambda: next((e["id"] for e in system.executions(run_id)), None), 20, "the execution")
    page.goto(f"{base}/executions/{xid}")
    stay(page)
    page.wait_for_selector("#ex-status .st-succeeded", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#output').textContent.includes('done')", timeout=10_000)
    page.wait_for_function("() => document.querySelector(\"#ex-facts [data-field='exit_code']\")"
                           ".textContent.trim() === '0'",
                           timeout=10_000)
    assert page.query_selector("#ex-facts [data-field='ended'] time") is not None
    assert page.query_selector("#ex-actions form[data-post$='/retry']") is not None
    assert stayed(page)


def test_job_page_updates_live_with_its_chart(angora: tuple[str, System], page: Any) -> None:
    base, system = angora
    page.clock.install()
    page.goto(base + "/jobs/extract")
    bars = page.locator("#job-chart rect.bar").count()
    rows = page.locator("#job-history tbody tr").count()
    stay(page)
    finished_run(system, "demo.start")
    live_until(page, f"document.querySelectorAll('#job-chart rect.bar').length === {bars + 1}")
    live_until(page, f"document.querySelectorAll('#job-history tbody tr').length === {min(rows + 1, 25)}")
    assert page.locator("#job-chart polyline.rate").count() == 1
    assert stayed(page)
    screenshot(page, "live-job.png")


def test_schedules_page_updates_live(angora: tuple[str, System], page: Any) -> None:
    base, _ = angora
    page.goto(base + "/schedules")
    cell = ("[...document.querySelectorAll('#schedules tbody tr')]"
            ".find((r) => r.querySelector('th').textContent.includes('often')).lastElementChild")
    first = page.evaluate(f"{cell}.innerHTML")
    stay(page)
    page.wait_for_function(f"() => {cell}.innerHTML !== {json.dumps(first)}", timeout=30_000)
    assert "sent" in page.evaluate(f"{cell}.textContent") and stayed(page)


def test_the_live_button_pauses_and_resumes(angora: tuple[str, System], page: Any) -> None:
    base, _ = angora

    def is_poll(req: Any) -> bool:
        return bool(req.headers.get("x-angora-live"))
    page.clock.install()  # the page's timers run when the test moves its clock on: no wait for a poll interval
    page.goto(base + "/runs")
    with page.expect_request(is_poll, timeout=20_000):
        page.clock.fast_forward(7000)  # longer than the slowest poll interval
    page.click("#live")
    assert page.get_attribute("#live", "data-state") == "paused"
    assert page.get_attribute("#live", "aria-pressed") == "false"
    polls: list[str] = []
    page.on("request", lambda req: polls.append(req.url) if is_poll(req) else None)
    page.clock.fast_forward(7000)
    page.wait_for_timeout(500)  # a poll the timers fired would be on its way by now
    assert polls == []
    page.focus("#live")
    with page.expect_request(is_poll, timeout=20_000):
        page.keyboard.press("Enter")  # a real button: the keyboard works too
        assert page.get_attribute("#live", "data-state") == "on"
        page.clock.fast_forward(7000)


def test_keyboard_shortcuts(angora: tuple[str, System], page: Any) -> None:
    base, _ = angora
    page.goto(base + "/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "job-filter"
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    first = page.evaluate("document.activeElement.getAttribute('href')")
    page.keyboard.press("j")
    second = page.evaluate("document.activeElement.getAttribute('href')")
    assert first.startswith("/jobs/") and second.startswith("/jobs/") and first != second
    page.keyboard.press("k")
    assert page.evaluate("document.activeElement.getAttribute('href')") == first
    page.keyboard.press("?")
    assert page.is_visible("#keys-help")
    screenshot(page, "keys-help.png")
    page.keyboard.press("Escape")
    assert not page.is_visible("#keys-help")
    page.keyboard.press("g")
    page.keyboard.press("r")
    page.wait_for_url("**/runs")


@pytest.fixture(scope="module")
def auth_web(angora: tuple[str, System], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Procfile web server on the same Redis and prefix, with a token required."""
    _, system = angora
    tmp = tmp_path_factory.mktemp("auth")
    write_config(tmp / "config", JOBS, name="demo.yml")
    env = {k: v for k, v in system.env.items() if k != "ANGORA_AUTH"}
    with procfile_web(dict(env, ANGORA_AUTH_TOKEN="s3cret-token"), tmp) as (_, port):
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{base}/healthz"), 60, f"the second web server on {base}")
        yield base


def test_live_updates_work_behind_auth(angora: tuple[str, System], auth_web: str, page: Any) -> None:
    _, system = angora
    page.clock.install()
    page.goto(auth_web + "/runs")
    page.wait_for_url("**/login**")
    page.fill("#token", "s3cret-token")
    page.click("button[type=submit]")
    page.wait_for_url("**/runs")
    assert page.get_attribute("#live", "data-state") == "on"
    stay(page)
    run_id = system.send("demo.start")
    live_until(page, f"!!document.querySelector(\"#runs-list a[href='/runs/{run_id}']\")")
    assert stayed(page) and page.get_attribute("#live", "data-state") == "on"
