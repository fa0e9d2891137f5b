"""Cancel a run on real Redis: its waiting executions (queued, held, delayed replays) go at once, a replay born
after the cancel is never due, and `kill` ends its running commands (a real worker, real processes)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from angora_rq.cli import main
from angora_rq.commands.runner import Outcome
from angora_rq.core.codec import to_str_dict
from angora_rq.core.schema import Exec
from angora_rq.core.errors import NotFound
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.control import Control
from angora_rq.store.queries import Queries
from angora_rq.store.state import State, load_claimed
from angora_testkit import pid_alive
from test_pause import claim

FAILING = JobDef("flaky", ("go",), ("false",), queue="q1")  # replays for ever


def create(r: redis.Redis, keys: Keys, job: JobDef, run: str, status: str = "queued", **kw: Any) -> str:
    state = State(keys, Settings(prefix=keys.prefix))
    with r.pipeline() as pipe:
        xid = state.create(pipe, job, Message.create("go", None, run, origin="test"), time.time(), status=status,
                           **kw)
        pipe.execute()
    return xid


def status(r: redis.Redis, keys: Keys, xid: str) -> str:
    return (r.hget(keys.execution(xid), Exec.status) or b"").decode()


def test_cancel_drops_queued_held_and_delayed_executions_at_once(r: redis.Redis, keys: Keys) -> None:
    control = Control(r, keys, Settings(prefix=keys.prefix))
    queued = create(r, keys, FAILING, "r1")
    delayed = create(r, keys, FAILING, "r1", status="delayed", delay=300)
    held = create(r, keys, FAILING, "r1", status="held")  # waiting for a concurrency slot
    r.rpush(keys.held("flaky"), held)
    paused = create(r, keys, FAILING, "r1", status="held")  # dispatched while its job was paused
    r.rpush(keys.paused_held("flaky"), paused)
    other = create(r, keys, FAILING, "r2", status="delayed", delay=300)

    out = control.cancel_run("r1")

    assert out == {"run_id": "r1", "canceled": True, "dropped": [queued, delayed, held, paused],
                   "kill_requested": []}
    assert all(status(r, keys, x) == "canceled" for x in (queued, delayed, held, paused))
    assert r.zrange(keys.delayed(), 0, -1) == [other.encode()] and status(r, keys, other) == "delayed"
    assert r.llen(keys.rq_queue("q1")) == 0 and r.llen(keys.held("flaky")) == 0
    assert r.llen(keys.paused_held("flaky")) == 0
    run = Queries(r, keys).run("r1")
    assert run["active"] == 0 and run["status"] == "canceled"  # now, not when the replay would have come due
    with pytest.raises(NotFound):
        control.cancel_run("nope")


def test_a_replay_of_a_command_that_fails_after_the_cancel_is_never_due(r: redis.Redis, keys: Keys) -> None:
    settings = Settings(prefix=keys.prefix)
    xid = create(r, keys, FAILING, "r1")
    assert claim(r, keys, ("q1",)) == [xid]  # running on worker w1
    assert Control(r, keys, settings).cancel_run("r1")["dropped"] == []
    ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
    now = time.time()
    with r.pipeline() as pipe:
        State(keys, settings).finalize(pipe, ex, Outcome(1, None, "exit", now - 1, now, 1.0, ""), now, worker="w1")
        pipe.execute()
    nxt = r.hget(keys.execution(xid), Exec.next).decode()
    assert status(r, keys, xid) == "replaying" and status(r, keys, nxt) == "canceled"
    assert r.zcard(keys.delayed()) == 0
    run = Queries(r, keys).run("r1")
    assert run["active"] == 0 and run["status"] == "canceled" and run["jobs"]["flaky"]["status"] == "canceled"


def test_a_replay_of_a_run_not_canceled_still_waits_for_its_backoff(r: redis.Redis, keys: Keys) -> None:
    settings = Settings(prefix=keys.prefix)
    xid = create(r, keys, FAILING, "r1")
    claim(r, keys, ("q1",))
    ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
    now = time.time()
    with r.pipeline() as pipe:
        State(keys, settings).finalize(pipe, ex, Outcome(1, None, "exit", now - 1, now, 1.0, ""), now, worker="w1")
        pipe.execute()
    nxt = r.hget(keys.execution(xid), Exec.next).decode()
    assert status(r, keys, nxt) == "delayed" and r.zrange(keys.delayed(), 0, -1) == [nxt.encode()]
    run = Queries(r, keys).run("r1")
    assert run["active"] == 1 and run["jobs"]["flaky"]["status"] == "replaying"


def test_cancel_with_kill_ends_the_running_commands(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data", kill_grace=0.5)
    pidfile = tmp_path / "pid"
    job = JobDef("long", ("go",), ("sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"), replay=0)
    xid = create(r, keys, job, "r1")
    waiting = create(r, keys, FAILING, "r1", status="delayed", delay=300)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while status(r, keys, xid) != "running" or not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            worker.step(max_wait=0.05)
        out = Control(r, keys, settings).cancel_run("r1", kill=True)
        assert out["dropped"] == [waiting] and out["kill_requested"] == [xid]
        while status(r, keys, xid) == "running":
            assert time.monotonic() < deadline
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    assert status(r, keys, xid) == "killed" and not pid_alive(int(pidfile.read_text()))
    run = Queries(r, keys).run("r1")
    assert run["active"] == 0 and run["status"] == "canceled"


def test_angora_cancel(r: redis.Redis, keys: Keys, angora_env: dict[str, str]) -> None:
    create(r, keys, FAILING, "r1", status="delayed", delay=300)
    runner = CliRunner()
    result = runner.invoke(main, ["cancel", "r1", "--kill"], env=angora_env)
    assert result.exit_code == 0, result.output
    assert "run r1 canceled: 1 waiting execution(s) dropped; kill requested for 0 running" in result.output
    assert Queries(r, keys).run("r1")["status"] == "canceled"
    result = runner.invoke(main, ["cancel", "nope"], env=angora_env)
    assert result.exit_code == 1 and "no run 'nope'" in result.output
