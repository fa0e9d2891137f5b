"""The dead letters, from the dashboard's note to Send again, in a real headless Chromium against real web,
matcher and worker processes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.schema import Entry
from test_browser import BROWSER_MARKS, Processes, browser_page, wait_until, web_system  # noqa: F401 (a fixture)
from test_browser_rerun import api, finished

JOBS = """\
- name: step
  triggers: [dl.go]
  command: "true"
"""

pytestmark = BROWSER_MARKS


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Processes]]:
    """`angora web` on a free port, a matcher (claiming after 1 s) and a worker."""
    with web_system(angora_env, tmp_path, JOBS, ANGORA_CLAIM_IDLE="1") as made:
        yield made


def test_a_dead_letter_is_found_from_the_dashboard_and_sent_again(
        system: tuple[str, Processes], browser_page: Any, angora_env: dict[str, str]) -> None:  # noqa: F811
    base, procs = system
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    first = api(f"{base}/send", b"msg=dl.go")["run_id"]
    wait_until(lambda: finished(base, first), 30, f"a first run\n{procs.logs()}")
    r, keys = redis.Redis.from_url(angora_env["REDIS_URL"]), Keys(angora_env["ANGORA_PREFIX"])
    bad = r.xadd(keys.stream(), {Entry.topic: "dl.go", Entry.run: "bad-run", Entry.origin: "api",
                                 Entry.sent: "not a time"}).decode()
    api(f"{base}/send", b"msg=dl.go")  # something goes through meanwhile
    wait_until(lambda: api(f"{base}/api/v1/dead-letters")["total"], 30, f"the dead letter\n{procs.logs()}")
    page.goto(base + "/")
    note = page.locator("#dead-letters")
    assert "1 message" in note.inner_text() and bad in note.inner_text()
    note.get_by_role("link", name="See them").click()
    page.wait_for_url(base + "/dead-letters")
    row = page.locator("#dead-letters tbody tr", has_text=bad)
    assert "ValueError" in row.inner_text()
    row.get_by_role("button", name="Send again").click()
    page.wait_for_url(lambda url: "/runs/" in url)
    new_id = page.url.rsplit("/", 1)[1]
    assert wait_until(lambda: finished(base, new_id), 30, "the run sent again")["status"] == "succeeded"
    page.goto(base + "/dead-letters")
    assert "No dead letters." in page.locator("#dead-letters").inner_text()
    assert page.errors == []  # type: ignore[attr-defined]
