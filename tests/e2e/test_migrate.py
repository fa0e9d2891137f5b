"""Upgrades meet old data safely: records written by the release before the compact layout (commit 1f8439b, its
own code run from a copy of that commit) are refused by this release's roles with one line, converted in place by
`angora migrate`, unfinished work included, and then run to completion by this release."""
from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from angora_rq.core.codec import to_str_dict
from angora_rq.core.keys import Keys
from angora_rq.core.layout import LAYOUT
from angora_rq.store.migrate import ROLES_SILENT
from angora_rq.store.queries import Queries
from angora_testkit import System, compact, wait_for, write_config

OLD = "1f8439b"  # the last commit before this layout
ROOT = Path(__file__).resolve().parents[2]
JOBS = """
- name: first
  triggers: [go]
  command: "true"
  messages: [go.next]
- name: second
  triggers: [go.next]
  command: "true"
- name: flaky
  triggers: [flaky]
  command: [sh, -c, "test -e marker || {{ touch marker; exit 1; }}"]
  cwd: {cwd}
  replay_delay: 3
- name: later
  triggers: [later]
  command: "true"
"""


@pytest.fixture(scope="module")
def old_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The angora_rq package as commit 1f8439b has it, extracted from this repository's history."""
    got = subprocess.run(["git", "-C", str(ROOT), "archive", OLD, "angora_rq"], capture_output=True)
    if got.returncode != 0:
        pytest.skip(f"commit {OLD} is not in this checkout's history: {got.stderr.decode()[:200]}")
    dest = tmp_path_factory.mktemp("old")
    with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def send(system: System, topic: str) -> str:
    """Send a message with the system's own CLI (the old one's too); its run id."""
    got = system.cli("send", topic)
    assert got.returncode == 0, got.stderr
    return got.stdout.split()[-1]


def raw(r: redis.Redis, key: str) -> dict[str, str]:
    return to_str_dict(r.hgetall(key))


def test_data_of_the_previous_layout_is_refused_then_migrated_and_run(
        angora_env: dict[str, str], old_code: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", JOBS.format(cwd=tmp_path))
    old = System({**angora_env, "PYTHONPATH": str(old_code)}, config, tmp_path, cwd=old_code)
    r, k = old.r, old.keys
    # -- the previous release writes its records ---------------------------------------------------------------
    old.start("matcher")
    worker = old.start("worker")
    try:
        done = [send(old, "go") for _ in range(2)]  # through the old CLI, with the old code on its path
        flaky = send(old, "flaky")
        wait_for(lambda: all(raw(r, k.run(run)).get("active") == "0" for run in done), 60, what="old runs to end")
        wait_for(lambda: r.zcard(k.delayed()) == 1, 60, what="the flaky job's replay to wait for its backoff")
        worker.terminate()
        worker.wait(30)
        queued = [send(old, "later") for _ in range(3)]  # dispatched by the old matcher, never run
        wait_for(lambda: all(raw(r, k.run(run)).get("s:later") == "queued" for run in queued), 30,
                 what="the later jobs to be queued")
    finally:
        old.stop()
    undispatched = send(old, "later")  # on the stream, read by no matcher
    xid = raw(r, k.run(queued[0]))["e:later"]
    assert raw(r, k.execution(xid))["spec"] and r.exists(k.v1_run_executions(queued[0]))  # the old layout
    assert not r.exists(k.schema())

    # -- this release refuses it, with one line saying what to do --------------------------------------------------
    new = System(angora_env, config, tmp_path)
    refused = new.cli("worker", "--burst")
    assert refused.returncode != 0 and "angora migrate" in refused.stderr, refused.stderr
    assert len([line for line in refused.stderr.splitlines() if "Error" in line]) == 1, refused.stderr
    # migrate waits until every role has been silent for ROLES_SILENT: the old ones beat a moment ago.
    early = new.cli("migrate")
    assert early.returncode != 0 and "are running" in early.stderr, early.stderr
    assert not r.exists(k.schema()) and r.exists(k.v1_run_executions(queued[0]))  # nothing was converted
    stopped_at = time.time() - ROLES_SILENT - 1  # as if that long had passed (they are stopped)
    r.hset(k.heartbeats(), mapping={name: stopped_at for name in r.hkeys(k.heartbeats())})
    migrated = new.cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert r.get(k.schema()) == str(LAYOUT).encode()
    assert not r.exists(k.v1_run_executions(queued[0])) and not list(r.scan_iter(match=k.v1_dedupe_pattern()))
    assert compact(r, k.execution(xid)) and "spec" not in raw(r, k.execution(xid))
    assert new.cli("migrate").returncode == 0  # a second run finds nothing to do

    # -- and runs it to completion -------------------------------------------------------------------------------
    new.start("matcher")
    new.start("worker")
    try:
        for run in [*done, flaky, *queued, undispatched]:
            view: dict[str, Any] = new.wait_run(run, 90)
            assert view["status"] == "succeeded", (run, view)
    finally:
        new.stop()
    q = Queries(r, Keys(k.prefix))
    assert [e["status"] for e in new.executions(flaky)] == ["failed", "succeeded"]  # the replay, migrated delayed
    assert {e["job"] for e in new.executions(done[0])} == {"first", "second"}
    assert q.execution(new.executions(done[0])[0]["id"])["spec"]["name"] == "first"  # its spec, from its version
    assert q.job_stats(["later"])["later"]["succeeded"] == 4
