"""The storage budget: past HISTORY_SHARE of the memory budget, finished history goes, oldest run first; unfinished
work never does, and a workflow running meanwhile completes (real matcher and worker, in this process)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.pressure import HISTORY_SHARE
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.processes.janitor import Janitor
from angora_rq.processes.matcher import Matcher
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store import bus
from angora_rq.store.history import used_memory
from angora_rq.store.queries import Queries

FILL = JobDef("fill", ("fill",), ("true",))
GO = "go"  # the file the running workflow's first job waits for (in its cwd)
SLOW = JobDef("slow", ("work.start",), ("sh", "-c", f"while [ ! -e {GO} ]; do sleep 0.05; done"),
              messages=("work.next",))
AFTER = JobDef("after", ("work.next",), ("true",))
ROOM = 600_000  # bytes of history the budget leaves above what Redis held at the start


def drive(matcher: Matcher, worker: AngoraWorker, done: object, within: float = 120.0) -> None:
    """Step the matcher and the worker until done() holds (a bound against hangs, not a timing test)."""
    deadline = time.monotonic() + within
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {done}"
        matcher.step(block_ms=0)  # (a blocked read that finds nothing lasts Redis' 100 ms tick, not 5 ms)
        worker.step(max_wait=0.01)


def test_history_is_trimmed_oldest_first_and_a_running_workflow_completes(r: redis.Redis, keys: Keys,
                                                                          tmp_path: Path) -> None:
    base = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    # A budget whose history share leaves ROOM above what the server holds now (its other databases included).
    settings = dataclasses.replace(base, max_memory=int((used_memory(r) + ROOM) / HISTORY_SHARE))
    slow = dataclasses.replace(SLOW, cwd=str(tmp_path))
    snap = Snapshot(Config(jobs=(FILL, slow, AFTER), version="v1"))
    q = Queries(r, keys)
    bus.ensure_group(r, keys)
    matcher = Matcher(r, keys, settings, lambda: snap, name="m1")
    worker = AngoraWorker(r, keys, settings, concurrency=8, name="w1")
    worker.start()
    try:
        running = Message.create("work.start", None, None, origin="test")
        bus.send(r, keys, running)
        drive(matcher, worker, lambda: q.run(running.run_id)["jobs"].get("slow", {}).get("status") == "running")
        fills = []
        for _ in range(2000):  # about 2 MB of finished history: over three times the room
            msg = Message.create("fill", None, None, origin="test")
            bus.send(r, keys, msg)
            fills.append(msg.run_id)
        drive(matcher, worker, lambda: q.job_stats(["fill"])["fill"]["succeeded"] >= len(fills))

        # The worker's own janitor has been trimming meanwhile (every few seconds); one more pass, to the end.
        Janitor(r, keys, settings).keep_in_budget()

        assert used_memory(r) <= settings.max_memory * HISTORY_SHARE
        kept = {x.decode() for x in r.zrange(keys.runs(), 0, -1)}
        gone = [run for run in fills if run not in kept]
        assert 0 < len(gone) < len(fills)
        # Oldest first: what went is the first runs sent, what stays the last ones, with their executions.
        assert gone == fills[:len(gone)]
        assert all(r.exists(keys.run(run)) for run in fills[len(gone):])
        assert not any(r.exists(keys.run(run)) for run in gone)
        assert all(len(q.run_executions(run)) == 1 for run in fills[-10:])
        # The running workflow was not touched, and completes.
        assert running.run_id in kept and q.run(running.run_id)["jobs"]["slow"]["status"] == "running"
        (tmp_path / GO).touch()
        drive(matcher, worker, lambda: q.run(running.run_id)["status"] == "succeeded")
        jobs = q.run(running.run_id)["jobs"]
        assert (jobs["slow"]["status"], jobs["after"]["status"]) == ("succeeded", "succeeded")
        # The API says how far back history now reaches.
        reach = worker.janitor.pressure.usage()["history"]
        assert reach["runs"] == len(kept) and reach["since"] == r.zrange(keys.runs(), 0, 0, withscores=True)[0][1]
    finally:
        worker.close()
