"""A worker records ends whose run became a key of the wrong type (corrupted data) while they ran: every other
record of theirs is written once, `work` stays true, and nothing is left for a retry to count twice; against the
real redis-server."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.queries import Queries
from test_cancel import create, status
from test_claim_fails_clean import corrupt, step_through_errors


@pytest.mark.parametrize("sends", [False, True], ids=["finish-alone", "in-a-transaction"])
def test_an_end_whose_run_is_corrupted_is_recorded_once_and_work_stays_true(
        r: redis.Redis, keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture, sends: bool) -> None:
    job = JobDef("nap", ("go",), ("sleep", "0.3"), queue="q1", replay=0, messages=("after",) if sends else ())
    xid = create(r, keys, job, "r1")
    worker = AngoraWorker(r, keys, Settings(prefix=keys.prefix, data_dir=tmp_path / "data"), concurrency=1,
                          name="w1", queues=("q1",))
    worker.start()
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while status(r, keys, xid) != "running":
            assert time.monotonic() < deadline, "not claimed"
            worker.step(max_wait=0.05)
        corrupt(r, keys.run("r1"))
        with caplog.at_level(logging.ERROR, logger="angora_rq"):
            step_through_errors(worker, lambda: not (worker.active or worker.outbox), errors,
                                timeout=deadline - time.monotonic())
    finally:
        worker.close()
    assert status(r, keys, xid) == "succeeded"
    assert Queries(r, keys).job_stats(["nap"])["nap"]["total"] == 1
    assert r.llen(keys.worker_inflight("w1")) == 0
    assert r.xlen(keys.stream()) == (1 if sends else 0)  # the message it sends, once
    assert r.get(keys.work()) == (b"1" if sends else b"0")  # that message is all the work left
    if sends:  # the transaction's other command on the run (the message's count) failed too: its error is raised
        assert errors and all("WRONGTYPE" in e for e in errors)
    else:  # FINISH alone says what it could not write, and nothing is raised
        assert not errors and any("without some of their records" in m for m in caplog.messages)
