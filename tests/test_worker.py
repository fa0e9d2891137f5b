"""AngoraWorker in this process, step by step, on a real redis-server."""
from __future__ import annotations

import time
from pathlib import Path

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.store.state import State
from angora_rq.processes.worker import AngoraWorker

JOB = JobDef("nap", ("go",), ("sleep", "0.3"), replay=0)


def test_the_claim_sent_with_a_batchs_records_survives_a_server_that_forgot_its_scripts(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """The next CLAIM rides after the FINISH transaction as EVALSHA; after SCRIPT FLUSH (a Redis restart) it gets
    NOSCRIPT there, and the worker must load the script and claim, not fail the step."""
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path / "data")
    state = State(keys, settings)
    with r.pipeline() as pipe:
        ids = [state.create(pipe, JOB, Message.create("go", None, f"run{i}", origin="test"), 1000.0 + i)
               for i in range(2)]
        pipe.execute()
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        while r.hget(keys.execution(ids[0]), "status") != b"running":
            worker.step(max_wait=0.01)
        r.script_flush()  # the server forgets CLAIM while the first command runs
        assert r.hget(keys.execution(ids[0]), "status") == b"running"
        deadline = time.monotonic() + 30
        while r.hget(keys.execution(ids[1]), "status") != b"succeeded":
            assert time.monotonic() < deadline, r.hgetall(keys.execution(ids[1]))
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    assert r.hget(keys.execution(ids[0]), "status") == b"succeeded"
    assert worker.stats.claims >= 2
