"""`concurrency: N`: at most N executions of a job run at once across every worker, as the commands themselves
see it; the others wait, in order, and none is dropped."""
from __future__ import annotations

from pathlib import Path

import redis

from angora_rq.core.keys import Keys
from angora_testkit import System, python_cmd, write_config

# Each command counts itself in and out under an exclusive flock and records the most it ever saw running.
COUNTER = """
import fcntl, os, sys, time
d = sys.argv[1]
def bump(step):
    with open(os.path.join(d, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cur = int(open(os.path.join(d, "cur")).read() or 0) if os.path.exists(os.path.join(d, "cur")) else 0
        cur += step
        open(os.path.join(d, "cur"), "w").write(str(cur))
        top = int(open(os.path.join(d, "max")).read()) if os.path.exists(os.path.join(d, "max")) else 0
        open(os.path.join(d, "max"), "w").write(str(max(top, cur)))
        if step < 0:
            open(os.path.join(d, "done"), "a").write(os.environ["ANGORA_PARAM_N"] + "\\n")
bump(1)
time.sleep(0.3)
bump(-1)
"""


def test_concurrency_2_across_3_workers(angora_env: dict[str, str], tmp_path: Path, r: redis.Redis,
                                        keys: Keys) -> None:
    work = tmp_path / "counter"
    work.mkdir()
    argv = python_cmd(COUNTER)[:-1] + f', "{work}"]'
    cfg = write_config(tmp_path / "config", f"""
        - name: limited
          triggers: [ev.limited]
          concurrency: 2
          command: {argv}
    """)
    s = System(angora_env, cfg, tmp_path)
    try:
        s.start("matcher")
        for _ in range(3):
            # One command per worker: reaching 2 at once then takes two workers, so the limit is shown to hold
            # across them (with -c 4, one worker could take every execution itself, and sometimes does).
            s.start("worker", "-c", "1")
        runs = [s.send("ev.limited", {"N": str(i)}) for i in range(20)]
        for run_id in runs:
            assert s.wait_run(run_id, 90)["status"] == "succeeded", s.logs()
    finally:
        s.stop()
    assert int((work / "max").read_text()) == 2  # reached, never passed
    assert sorted((work / "done").read_text().split(), key=int) == [str(i) for i in range(20)]
    assert (work / "cur").read_text() == "0"
    workers = {e["worker"] for run_id in runs for e in s.executions(run_id)}
    assert len(workers) >= 2, workers
    assert r.scard(keys.slots("limited")) == 0 and r.llen(keys.held("limited")) == 0
