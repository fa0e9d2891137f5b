"""Angora's copies of RQ's key names must match RQ's own classes."""
from __future__ import annotations

import fakeredis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys


def test_rq_key_names_match_rq() -> None:
    conn = fakeredis.FakeRedis()
    q = Queue("etl", connection=conn)
    assert K.rq_queue("etl") == q.key
    assert K.RQ_QUEUES == Queue.redis_queues_keys
    assert K.rq_job("abc") == Job.key_for("abc")
    assert K.rq_started("etl") == StartedJobRegistry("etl", connection=conn).key
    assert K.rq_finished("etl") == FinishedJobRegistry("etl", connection=conn).key
    assert K.rq_failed("etl") == FailedJobRegistry("etl", connection=conn).key
    assert K.RQ_WORKERS == Worker.redis_workers_keys
    assert K.rq_worker("w1") == Worker.redis_worker_namespace_prefix + "w1"


def test_every_key_has_the_prefix() -> None:
    k = Keys("pfx")
    names = [
        k.stream(), k.dedupe("1-0", "j"), k.join("r", "j"), k.execution("x"), k.job_stats("j"),
        k.job_executions("j"), k.run("r"), k.run_executions("r"), k.runs(), k.delayed(), k.workers(),
        k.worker_alive("w"), k.worker_inflight("w"), k.worker_control("w"), k.bell("q"), k.orphans(),
        k.heartbeats(), k.config(), k.paused_jobs(), k.paused_queues(), k.held("j"), k.slots("j"),
        k.scheduler_lease(), k.scheduler_fence(), k.schedule("s"),
    ]
    assert all(n.startswith("pfx:") for n in names)
    assert len(set(names)) == len(names)
