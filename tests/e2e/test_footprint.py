"""What Angora keeps in Redis per execution, measured with MEMORY USAGE on the real redis-server (a size test)."""
from __future__ import annotations

import time
from pathlib import Path

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.processes.matcher import Matcher
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store import bus
from angora_rq.store.queries import Queries
from angora_rq.store.runindex import RunIndex

BYTES_PER_EXECUTION = 1200  # issue 16's target: what a small managed Redis (25-100 MB) can afford


def key_bytes(r: redis.Redis) -> dict[bytes, int]:
    """MEMORY USAGE of every key of the test's database (SAMPLES 0: every element counted)."""
    return {k: int(r.memory_usage(k, samples=0) or 0) for k in r.scan_iter(count=1000)}


def test_a_retained_execution_costs_under_1200_bytes(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """1,000 executions through the real path (send, matcher, worker): every key they created, their RQ jobs and
    indices included, over 1,000. One run per execution, the costliest shape (a run's records are shared by its
    executions)."""
    n = 1000
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    job = JobDef("nightly_export", ("export.start",), ("true",))
    snap = Snapshot(Config(jobs=(job,), version="3f2a9c41d07e"))  # a real version's length
    bus.ensure_group(r, keys)
    matcher = Matcher(r, keys, settings, lambda: snap, name="m1")
    worker = AngoraWorker(r, keys, settings, concurrency=8, name="w1")
    worker.start()
    try:
        before = key_bytes(r)
        for _ in range(n):
            bus.send(r, keys, Message.create("export.start", None, None, origin="http"))
        while matcher.step(block_ms=10):
            pass
        deadline = time.monotonic() + 120
        while Queries(r, keys).job_stats([job.name])[job.name]["succeeded"] < n:
            assert time.monotonic() < deadline, "the executions did not finish"
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    bus.trim(r, keys)
    RunIndex(r, keys).settle()  # as the janitor does every few seconds: each run in its status's and job's index
    after = key_bytes(r)
    created = {k: b for k, b in after.items() if k not in before or b != before[k]}
    per_execution = sum(created.values()) / n
    top = sorted(created.items(), key=lambda kv: -kv[1])[:5]
    assert per_execution < BYTES_PER_EXECUTION, (per_execution, top)
    assert r.dbsize() < n * 2 + 50  # an execution and its run per execution, and nothing else
