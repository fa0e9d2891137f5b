"""The outputs files of killed workers are swept: those of executions that no longer run, and only those."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.schema import Exec, Status
from angora_rq.processes.spool import MIN_AGE, sweep_outputs
from angora_testkit import System, wait_for, write_config

NOW = 1_000_000.0


def output(spool: Path, name: str, age: float) -> Path:
    path = spool / name
    path.write_text("A=1\n")
    os.utime(path, (NOW - age, NOW - age))
    return path


def test_only_files_of_executions_that_no_longer_run_are_removed(r: redis.Redis, keys: Keys,
                                                                   tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    r.hset(keys.execution("run1"), Exec.status, Status.running)
    r.hset(keys.execution("done1"), Exec.status, Status.succeeded)
    r.hset(keys.execution("lost1"), Exec.status, Status.replaying)
    r.hset(keys.execution("new1"), Exec.status, Status.failed)
    old = MIN_AGE + 1
    running = output(spool, "run1.output", old)
    done = output(spool, "done1.output", old)
    lost = output(spool, "lost1.output", old)
    gone = output(spool, "trimmed1.output", old)  # its execution left history
    fresh = output(spool, "new1.output", 0)  # untouched for less than MIN_AGE: looked at next time
    other = output(spool, "notes.txt", old)
    odd = output(spool, "not an id.output", old)  # not a name the runner gives: not ours
    link = spool / "link1.output"
    link.symlink_to(other)  # a command may leave a symlink there: removed, never followed
    os.utime(link, (NOW - old, NOW - old), follow_symlinks=False)
    assert sweep_outputs(r, keys, spool, NOW) == 4
    assert running.exists() and fresh.exists() and other.exists() and odd.exists()
    assert not any(p.exists() or p.is_symlink() for p in (done, lost, gone, link))
    assert sweep_outputs(r, keys, spool, NOW + MIN_AGE) == 1 and not fresh.exists()
    assert sweep_outputs(r, keys, tmp_path / "missing", NOW) == 0


JOBS = """
- name: writes
  triggers: [spool.go]
  command: [sh, -c, 'echo "A=$ANGORA_ATTEMPT" > "$ANGORA_OUTPUT"; if [ "$ANGORA_ATTEMPT" = 1 ]; then sleep 60; fi']
  replay: 1
"""


def test_a_sigkilled_workers_outputs_file_is_removed_by_the_next_worker(angora_env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    """The worker is killed while its command, having written $ANGORA_OUTPUT, still runs: the execution is
    replayed under a new id, and the file of the first is removed by the worker that runs the replay."""
    env = dict(angora_env, ANGORA_WORKER_TTL="1")
    s = System(env, write_config(tmp_path / "config", JOBS), tmp_path)
    spool = Path(env["ANGORA_DATA_DIR"]) / "spool"
    try:
        s.start("matcher")
        first = s.start("worker")
        run = s.send("spool.go")
        files = wait_for(lambda: list(spool.glob("*.output")), 30, what=f"the command's outputs file ({s.logs()})")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        s.start("worker")  # its janitor replays the first attempt; the replay runs here
        s.wait_run(run, timeout=60)
        os.utime(files[0], (time.time() - MIN_AGE - 1,) * 2)  # as if MIN_AGE had passed
        s.start("worker")  # a worker sweeps when it starts (then every minute)
        wait_for(lambda: not files[0].exists(), 30, what=f"the stale outputs file to go ({s.logs()})")
        assert [e["status"] for e in sorted(s.executions(run), key=lambda e: e["attempt"])] == ["failed", "succeeded"]
    finally:
        s.stop()
