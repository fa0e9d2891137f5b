"""Angora's copies of RQ's key names must match RQ's own classes."""
from __future__ import annotations

import fakeredis
import pytest
from rq import Queue, Worker
from rq.job import Job
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from angora_rq.core import keys as K
from angora_rq.core.keys import DEFAULT_PREFIX, Keys


@pytest.mark.parametrize("prefix", [DEFAULT_PREFIX, "team-b", "a:b"])
def test_rq_key_names_match_rq(prefix: str) -> None:
    conn = fakeredis.FakeRedis()
    k = Keys(prefix)
    name = k.rq_name("etl")
    q = Queue(name, connection=conn)
    assert k.rq_queue("etl") == q.key
    assert K.RQ_QUEUES == Queue.redis_queues_keys
    assert K.rq_job("abc") == Job.key_for("abc")
    assert k.rq_started("etl") == StartedJobRegistry(name, connection=conn).key
    assert k.rq_finished("etl") == FinishedJobRegistry(name, connection=conn).key
    assert k.rq_failed("etl") == FailedJobRegistry(name, connection=conn).key
    assert k.rq_canceled("etl") == CanceledJobRegistry(name, connection=conn).key
    assert K.RQ_WORKERS == Worker.redis_workers_keys
    assert K.rq_worker("w1") == Worker.redis_worker_namespace_prefix + "w1"
    assert K.rq_worker_executions("w1") == Worker([], "w1", connection=conn, prepare_for_work=False).executions_key
    assert K.rq_queue_workers(name) == WORKERS_BY_QUEUE_KEY % name
    assert Queue.from_queue_key(q.key, connection=conn).name == name  # how rq-dashboard lists it (Queue.all)
    assert k.own_queue(q.key) == "etl"


def test_each_prefix_has_its_own_rq_queues() -> None:
    """The default prefix keeps RQ's plain names; any other prefix's names carry it, and no name is shared."""
    default, b, ab, a = Keys(), Keys("b"), Keys("a:b"), Keys("a")
    assert default.rq_queue("default") == "rq:queue:default" and b.rq_queue("default") == "rq:queue:b:default"
    everyone = [default, b, ab, a]
    names = {(k.prefix, k.rq_queue(q)) for k in everyone for q in ("default", "etl", "b", "a.b")}
    assert len({key for _, key in names}) == len(names)
    for k in everyone:
        for other in everyone:
            for q in ("default", "etl", "b"):
                assert (other.own_queue(k.rq_queue(q)) == q) == (other == k)
    assert default.own_queue("rq:queue:") is None and b.own_queue("rq:queues") is None


def test_every_key_has_the_prefix() -> None:
    k = Keys("pfx")
    names = [
        k.stream(), k.execution("x"), k.tail("x"), k.job_stats("j"), k.job_executions("j"), k.run("r"), k.runs(),
        k.definitions("v"), k.definitions_index(), k.schema(), k.delayed(), k.workers(),
        k.worker_alive("w"), k.worker_inflight("w"), k.worker_guard("w"), k.worker_control("w"), k.bell("q"),
        k.orphans(),
        k.heartbeats(), k.config(), k.paused_jobs(), k.paused_queues(), k.held("j"), k.slots("j"),
        k.scheduler_lease(), k.scheduler_fence(), k.schedule("s"), k.work(), k.accepted(), k.idempotency("s"),
        k.tick_idempotency("s", 1), k.metrics(), k.runs_unsettled(), k.runs_settler(),
        k.runs_index_built(), k.runs_by_status("failed"), k.runs_by_job("j"), k.runs_indexed_jobs(),
        k.runs_scratch("t"),
    ]
    assert all(n.startswith("pfx:") for n in names)
    assert len(set(names)) == len(names)
