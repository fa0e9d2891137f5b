"""The run page's Re-run buttons in a real headless Chromium, against real web, matcher and worker processes."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from test_browser import BROWSER_MARKS, Processes, browser_page, wait_until, web_system  # noqa: F401 (a fixture)

JOBS = """\
- name: fetch
  triggers: [page.go]
  command: [test, -e, "{fixed}"]
  replay: 0
  messages: [page.fetched]
- name: store
  triggers: [page.fetched]
  command: "true"
"""

pytestmark = BROWSER_MARKS


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Processes]]:
    """`angora web` on a free port, a matcher and a worker; `fetch` fails until tmp_path/fixed exists."""
    with web_system(angora_env, tmp_path, JOBS.format(fixed=tmp_path / "fixed")) as made:
        yield made


def api(url: str, data: bytes | None = None) -> dict[str, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
        return json.loads(resp.read())


def finished(base: str, run_id: str) -> dict[str, Any] | None:
    run = api(f"{base}/api/v1/runs/{run_id}")
    return run if run["active"] == 0 and run["status"] not in ("queued", "running") else None


def test_rerun_failed_jobs_then_rerun_the_run(system: tuple[str, Processes], browser_page: Any,  # noqa: F811
                                             tmp_path: Path) -> None:
    base, procs = system
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    run_id = api(f"{base}/send", b"msg=page.go")["run_id"]
    assert wait_until(lambda: finished(base, run_id), 30, "the run to fail")["status"] == "failed"
    page.goto(f"{base}/runs/{run_id}")
    (tmp_path / "fixed").touch()
    with page.expect_navigation():  # the action reloads the page once the API has answered
        page.get_by_role("button", name="Re-run failed jobs").click()
    run = wait_until(lambda: finished(base, run_id), 30, f"the re-run of the failed jobs\n{procs.logs()}")
    assert run["status"] == "succeeded" and run["jobs"]["store"]["status"] == "succeeded"
    page.reload()
    assert page.locator("#run-status").inner_text().strip() == "succeeded"
    assert page.get_by_role("button", name="Re-run failed jobs").count() == 0  # nothing failed any more
    page.get_by_role("button", name="Re-run", exact=True).click()
    page.wait_for_url(lambda url: "/runs/" in url and run_id not in url)
    new_id = page.url.rsplit("/", 1)[1]
    assert wait_until(lambda: finished(base, new_id), 30, "the new run")["status"] == "succeeded"
    assert page.get_by_role("link", name=run_id).get_attribute("href") == f"/runs/{run_id}"  # "Re-run of"
    assert page.errors == []  # type: ignore[attr-defined]
