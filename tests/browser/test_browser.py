"""The UI in a real headless Chromium, against real `angora web`, `angora matcher` and `angora worker` processes.

Needs Debian's /usr/bin/chromium (scripts/test installs it); Playwright drives it, no `playwright install`.
Screenshots go to test-output/ at the repository root.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from angora_rq.core.keys import Keys

CHROMIUM = os.environ.get("ANGORA_CHROMIUM", "/usr/bin/chromium")
# The machine has no internet: without the background-networking flags Chromium's own connections are refused.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CLI = [sys.executable, "-m", "angora_rq.cli"]

JOBS = """\
- name: extract
  triggers: [demo.start]
  command: [sh, -c, 'echo "<b>not bold</b> extracting $ANGORA_PARAM_WHAT"; sleep 0.5']
  messages: [demo.extracted]
- name: load_left
  triggers: [demo.extracted]
  command: [sh, -c, 'echo left']
- name: load_right
  triggers: [demo.extracted]
  command: [sh, -c, 'echo right']
"""

# Every browser test's marks: `-m browser` selects them, and without Chromium they are skipped with the fix.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"),
]
pytestmark = BROWSER_MARKS


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    """Poll until predicate() is truthy (a bound against hangs, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def answers(url: str) -> bool:
    """Whether the web app answers /healthz (200 or degraded 200)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Processes:
    """Angora's processes started as a user would, output kept in files for failure messages."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> None:
        """Start `angora <args>` named `name`."""
        out = open(self.workdir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen([*CLI, *args], env=self.env, cwd=self.workdir, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        """Fail with the process's output when one has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"`angora {name}` exited with {proc.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        """The tail of every process's output."""
        parts = []
        for name in self.procs:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} ---\n{text[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM each process, then SIGKILL what is left after a grace period."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def web_system(angora_env: dict[str, str], tmp_path: Path, jobs: str,
               **extra_env: str) -> Iterator[tuple[str, Processes]]:
    """`angora web` on a free port, a matcher and a worker, on this test's Redis db with the definitions `jobs`
    (YAML text) and `extra_env`; stopped on the way out. Yields the web's base URL and the processes."""
    from angora_rq.processes.redis_server import free_port

    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "demo.yml").write_text(jobs)
    procs = Processes(dict(angora_env, ANGORA_CONFIG=str(config), **extra_env), tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        procs.start("web", "web", "--port", str(port))
        procs.start("matcher", "matcher")
        procs.start("worker", "worker")

        def web_up() -> bool:
            procs.check_alive()
            return answers(f"{base}/healthz")
        wait_until(web_up, 30, f"angora web on {base}")
        yield base, procs
    finally:
        procs.stop()


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[tuple[str, Processes]]:
    """`web_system` on JOBS, or the test's own through indirect parametrization, with rq-dashboard in full."""
    with web_system(angora_env, tmp_path, getattr(request, "param", JOBS), ANGORA_RQ_DASHBOARD="full") as made:
        yield made


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of a headless Debian Chromium driven by Playwright; JS errors are collected on page.errors."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
        # What the Content-Security-Policy blocked (web/guard.py) shows as console errors: count them as errors.
        page.on("console", lambda m: page.errors.append(m.text) if "Content Security Policy" in m.text  # type: ignore[attr-defined]
                else None)
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-output/."""
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    return path


def node_statuses(page: Any) -> dict[str, str]:
    """Each graph node's status as the DOM shows it."""
    return page.eval_on_selector_all("#graph [data-job]", "ns => Object.fromEntries(ns.map(n => "
                                     "[n.dataset.job, n.dataset.status || '']))")


def test_send_a_message_and_watch_the_run_succeed(system: tuple[str, Processes], browser_page: Any) -> None:
    base, procs = system
    page = browser_page
    page.goto(base + "/")
    assert page.locator("#jobs tbody tr").count() == 3
    page.fill("#job-filter", "load")
    assert page.locator("#jobs tbody tr:visible").count() == 2

    page.click("nav >> text=Send")
    page.fill("#msg", "demo.start")
    page.fill("#params", "WHAT=rows")
    page.click("button:has-text('Send')")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rsplit("/", 1)[1]

    def all_succeeded() -> bool:
        procs.check_alive()
        statuses = node_statuses(page)
        return len(statuses) == 3 and set(statuses.values()) == {"succeeded"}
    try:
        wait_until(all_succeeded, 60, "every node of the run to show succeeded")
        page.wait_for_selector("#graph[data-finished='yes']")
    finally:
        screenshot(page, "browser-run.png")
    assert node_statuses(page) == {"extract": "succeeded", "load_left": "succeeded", "load_right": "succeeded"}
    assert page.get_attribute("#graph", "data-run-status") == "succeeded"
    assert page.inner_text("#run-status").strip() == "succeeded"
    rows = page.eval_on_selector_all("#run-jobs tbody tr", "rs => rs.map(r => [r.dataset.job, "
                                     "r.querySelector('.status').textContent.trim()])")
    assert sorted(rows) == [["extract", "succeeded"], ["load_left", "succeeded"], ["load_right", "succeeded"]]
    assert page.locator("#run-executions tbody tr").count() == 3
    assert page.is_hidden("#run-actions")
    assert page.get_attribute("#graph [data-job='extract']", "href").startswith("/executions/")

    page.click("#graph [data-job='extract']")
    page.wait_for_url("**/executions/*")
    output = page.text_content("#output")
    assert "<b>not bold</b> extracting rows" in output  # shown as text ...
    assert page.locator("#output b").count() == 0  # ... never as markup
    assert run_id in page.inner_text("#ex-facts")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_run_now_with_params_follows_the_output_live(system: tuple[str, Processes], browser_page: Any) -> None:
    base, procs = system
    page = browser_page
    page.goto(base + "/jobs/extract")
    page.fill("#run-params", "WHAT=by hand")
    page.click("button:has-text('Run extract now')")
    page.wait_for_url("**/executions/*")

    # The page follows the output live, then reloads itself once the execution has ended.
    try:
        page.wait_for_selector("#output[data-running='']", state="attached", timeout=60_000)
    except Exception as e:  # playwright's TimeoutError: say what the processes said
        raise AssertionError(f"the execution page never showed the end: {e}\n{procs.logs()}") from e
    finally:
        screenshot(page, "browser-execution.png")
    assert page.inner_text("[data-live-status]").strip() == "succeeded"
    assert "extracting by hand" in page.text_content("#output")
    page.goto(base + "/workflows")
    page.click("#graph [data-job='extract']")
    assert page.get_attribute("#graph [data-job='load_left']", "class").count("hl-down") == 1
    assert "2 downstream" in page.inner_text("#graph-selection")
    screenshot(page, "browser-workflows.png")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_rq_dashboard_runs_under_the_csp_and_posts_with_the_token(system: tuple[str, Processes],
                                                                  browser_page: Any, keys: Keys) -> None:
    """rq-dashboard's inline script runs by its nonce (its templates need eval), and its buttons' POSTs carry
    the session's CSRF token: the compact button is answered 200."""
    base, procs = system
    page = browser_page
    page.goto(base + "/jobs/extract")
    page.click("button:has-text('Run extract now')")
    page.wait_for_url("**/executions/*")
    page.goto(base + "/rq/")
    page.wait_for_selector("table#queues tbody tr[data-role='queue'], table#queues tbody td a")
    queue = keys.rq_name("default")  # the name RQ knows this deployment's queue by
    assert queue in page.inner_text("table#queues")  # rendered by its script, from its JSON
    page.goto(base + f"/rq/0/view/jobs/{queue}/queued/8/asc/1")
    page.wait_for_selector("#compact-btn")
    with page.expect_response(lambda r: r.url.endswith("/compact")) as answer:
        page.click("#compact-btn")
        page.click("#confirmation-modal-yes")
    assert answer.value.status == 200 and answer.value.json() == {"status": "OK"}
    screenshot(page, "browser-rq-dashboard.png")


GATED = """\
- name: build
  triggers: [flow.start]
  command: [sh, -c, 'echo "STAGE=built" >> "$ANGORA_OUTPUT"']
  messages: [flow.built]
  on_failure: [flow.failed]
- name: deploy
  triggers: [flow.built]
  command: [sh, -c, 'echo "deploying $ANGORA_PARAM_STAGE"']
  approval: true
- name: notify
  triggers: [flow.failed]
  command: "true"
"""


@pytest.mark.parametrize("system", [GATED], indirect=True)
def test_a_gate_is_approved_from_the_run_page(system: tuple[str, Processes], browser_page: Any) -> None:
    base, procs = system
    page = browser_page
    page.goto(base + "/messages/new")
    page.fill("#msg", "flow.start")
    page.click("button:has-text('Send')")
    page.wait_for_url("**/runs/*")
    # The plan shows the gate and the failure branch from the start.
    page.wait_for_selector("#graph [data-job='deploy'].gate")
    assert page.locator("#graph path.edge.failure[data-from='build'][data-to='notify']").count() == 1
    try:
        page.wait_for_selector("#run-jobs tr[data-job='deploy'] td.decide button:has-text('Approve')",
                               timeout=60_000)
    except Exception as e:  # playwright's TimeoutError: say what the processes said
        raise AssertionError(f"no Approve button: {e}\n{procs.logs()}") from e
    assert node_statuses(page)["deploy"] == "awaiting_approval"
    page.click("#run-jobs tr[data-job='deploy'] td.decide button:has-text('Approve')")
    try:
        page.wait_for_selector("#graph[data-finished='yes']", timeout=60_000)
    finally:
        screenshot(page, "browser-approval.png")
    assert node_statuses(page) == {"build": "succeeded", "deploy": "succeeded", "notify": "not_triggered"}
    page.click("#graph [data-job='deploy']")
    page.wait_for_url("**/executions/*")
    assert "approved by" in page.inner_text("#approval")
    assert "deploying built" in page.text_content("#output")  # build's output reached deploy as a param
    assert not page.errors, page.errors  # type: ignore[attr-defined]
