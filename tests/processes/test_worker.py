"""AngoraWorker in this process, step by step, on a real redis-server."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.store.state import State
from angora_rq.processes.worker import AngoraWorker
from angora_rq.core.schema import Exec
from angora_rq.store.control import Control
from angora_rq.store.queries import Queries
from angora_testkit import ESCAPERS, escaping_script, kill_sleepers, new_tag, sleepers, wait_for

JOB = JobDef("nap", ("go",), ("sleep", "0.3"), replay=0)


def test_the_claim_sent_with_a_batchs_records_survives_a_server_that_forgot_its_scripts(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """The next CLAIM rides after the FINISH transaction as EVALSHA; after SCRIPT FLUSH (a Redis restart) it gets
    NOSCRIPT there, and the worker must load the script and claim, not fail the step."""
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    state = State(keys, settings)
    with r.pipeline() as pipe:
        ids = [state.create(pipe, JOB, Message.create("go", None, f"run{i}", origin="test"), time.time() + i)
               for i in range(2)]
        pipe.execute()
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        while r.hget(keys.execution(ids[0]), Exec.status) != b"running":
            worker.step(max_wait=0.01)
        r.script_flush()  # the server forgets CLAIM while the first command runs
        assert r.hget(keys.execution(ids[0]), Exec.status) == b"running"
        deadline = time.monotonic() + 30
        while r.hget(keys.execution(ids[1]), Exec.status) != b"succeeded":
            assert time.monotonic() < deadline, r.hgetall(keys.execution(ids[1]))
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    assert r.hget(keys.execution(ids[0]), Exec.status) == b"succeeded"
    assert worker.stats.claims >= 2


# -- nothing a command starts outlives its execution ------------------------------------------------------------
def _settings(keys: Keys, tmp_path: Path) -> Settings:
    return Settings(prefix=keys.prefix, data_dir=tmp_path / "data", kill_grace=0.5)


def _create(r: redis.Redis, keys: Keys, settings: Settings, job: JobDef, run: str = "run1") -> str:
    with r.pipeline() as pipe:
        xid = State(keys, settings).create(pipe, job, Message.create("go", None, run, origin="test"), time.time())
        pipe.execute()
    return xid


def _step_until(worker: AngoraWorker, check: Callable[[], Any], within: float = 30.0) -> None:
    """Step the worker until check() holds (a bound against hangs, not a timing test)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {check}"
        worker.step(max_wait=0.05)


def _status(r: redis.Redis, keys: Keys, xid: str) -> tuple[str, str]:
    f = r.hmget(keys.execution(xid), Exec.status, Exec.reason)
    return tuple(v.decode() if v else "" for v in f)  # type: ignore[return-value]


@pytest.mark.parametrize("how", ["timeout", "kill"])
def test_a_timeout_or_kill_leaves_no_process_behind(r: redis.Redis, keys: Keys, tmp_path: Path, how: str) -> None:
    tag = new_tag()
    settings = _settings(keys, tmp_path)
    job = JobDef("escape", ("go",), ("sh", "-c", escaping_script(tag)), replay=0,
                 timeout=5 if how == "timeout" else 600)
    xid = _create(r, keys, settings, job)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        _step_until(worker, lambda: set(sleepers(tag)) == ESCAPERS)  # all up: the command has not ended yet
        assert _status(r, keys, xid)[0] == "running"
        if how == "kill":
            assert Control(r, keys, settings).kill(xid) == "kill requested"
        _step_until(worker, lambda: _status(r, keys, xid)[0] != "running")
        assert _status(r, keys, xid) == (("failed", "timeout") if how == "timeout" else ("killed", "killed"))
        _step_until(worker, lambda: not sleepers(tag), within=15)
    finally:
        worker.close()
        kill_sleepers(tag)


def test_processes_left_by_a_finished_command_end_and_a_running_ones_stay(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """Each orphan is tied to its own execution (ANGORA_EXECUTION_ID): a finished command's daemon is ended, while
    the daemon of a command still running is left alone until that command ends."""
    tag = new_tag()
    settings = _settings(keys, tmp_path)
    running = _create(r, keys, settings, JobDef("long", ("go",), ("sh", "-c", f"(setsid sleep {tag}1 &); "
                                                                   f"exec sleep {tag}0"), replay=0))
    short = _create(r, keys, settings, JobDef("short", ("go",), ("sh", "-c", f"(setsid sleep {tag}2 &); sleep 0.5"),
                                               replay=0), run="run2")
    worker = AngoraWorker(r, keys, settings, concurrency=2, name="w1")
    worker.start()
    try:
        _step_until(worker, lambda: _status(r, keys, short)[0] == "succeeded")
        _step_until(worker, lambda: "2" not in sleepers(tag), within=15)
        assert set(sleepers(tag)) == {"0", "1"} and _status(r, keys, running)[0] == "running"
        Control(r, keys, settings).kill(running)
        # The daemon may be gone before the worker has recorded the kill: wait for both.
        _step_until(worker, lambda: _status(r, keys, running)[0] == "killed", within=15)
        _step_until(worker, lambda: not sleepers(tag), within=15)
    finally:
        worker.close()
        kill_sleepers(tag)


def test_a_sigkilled_workers_commands_leave_no_process_behind(
        r: redis.Redis, keys: Keys, tmp_path: Path, angora_env: dict[str, str], angora_exe: list[str]) -> None:
    """The guardian ends the groups, and every process carrying the worker's marker wherever it went."""
    tag = new_tag()
    settings = Settings.from_env(angora_env)
    xid = _create(r, keys, settings, JobDef("escape", ("go",), ("sh", "-c", escaping_script(tag)), replay=0))
    with open(tmp_path / "worker.log", "wb") as out:
        proc = subprocess.Popen([*angora_exe, "worker", "-c", "1"], env={**angora_env, "ANGORA_KILL_GRACE": "0.5"},
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: set(sleepers(tag)) == ESCAPERS, what=f"the command's processes to start ({sleepers(tag)})")
        assert _status(r, keys, xid)[0] == "running"
        proc.kill()
        proc.wait()
        wait_for(lambda: not sleepers(tag), 20, what="no process of the command to be left")
    finally:
        proc.kill()
        proc.wait()
        kill_sleepers(tag)


def test_executions_of_a_job_sharing_its_log_each_keep_their_own_tail(r: redis.Redis, keys: Keys,
                                                                      tmp_path: Path) -> None:
    settings = _settings(keys, tmp_path)
    job = JobDef("logged", ("go",), ("sh", "-c", "echo start $ANGORA_RUN_ID; sleep 2.5; echo end $ANGORA_RUN_ID >&2"),
                 log=str(tmp_path / "logs"), replay=0)
    ids = {run: _create(r, keys, settings, job, run=run) for run in ("runA", "runB")}

    def tails() -> dict[str, str]:
        return {run: Queries(r, keys).execution(xid)["tail"] for run, xid in ids.items()}

    worker = AngoraWorker(r, keys, settings, concurrency=2, name="w1")
    worker.start()
    try:
        # The live view (copied while they run), then the final tails: each holds its own lines only.
        _step_until(worker, lambda: tails() == {run: f"start {run}\n" for run in ids})
        _step_until(worker, lambda: all(_status(r, keys, xid)[0] == "succeeded" for xid in ids.values()))
    finally:
        worker.close()
    assert tails() == {run: f"start {run}\nend {run}\n" for run in ids}
    log = (tmp_path / "logs" / "logged.log").read_text()
    for run, xid in ids.items():  # one whole block each
        header = f"=== angora job=logged execution={xid} attempt=1 run={run}"
        assert re.search(rf"{header} started \S+ ===\nstart {run}\nend {run}\n{header} exited 0 after ", log), log
