"""Job functions the peer benchmarks run: RQ jobs and a Celery task that each spawn `true` and count completion.

Workers import this module by name (`peer_tasks`), so `bench/` must be on their PYTHONPATH. Settings come from the
environment because worker processes are started by the benchmark:

    BENCH_REDIS_URL  Redis the counters live on (and Celery's broker), e.g. redis://127.0.0.1:PORT/3
    BENCH_DONE_KEY   counter INCRed once per finished job (default bench:done)
    BENCH_LAT_KEY    list the last step of a chain RPUSHes its latency to (default bench:lat)
    BENCH_CELERY_QUEUE     queue of the Celery app `celery -A peer_tasks` loads (default bench-celery)
    BENCH_CELERY_PREFETCH  worker_prefetch_multiplier (default 4, Celery's own default)
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from typing import Any, Optional

import redis

CHAIN_LENGTH = 3
_conn: Optional[redis.Redis] = None


def _redis() -> redis.Redis:
    """The Redis counters are written to: the running RQ job's own connection, else one lazy per process."""
    # Inside a forking `rq worker` every job runs in a fresh horse, so a module-level connection would be a new
    # TCP connection (plus its handshake commands) per job; the job's connection already exists.
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # not running under RQ (Celery, or no rq installed)
        job = None
    if job is not None:
        return job.connection
    global _conn
    if _conn is None:
        _conn = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return _conn


def done_key() -> str:
    """Name of the completion counter."""
    return os.environ.get("BENCH_DONE_KEY", "bench:done")


def lat_key() -> str:
    """Name of the chain-latency list."""
    return os.environ.get("BENCH_LAT_KEY", "bench:lat")


def run_true() -> None:
    """Spawn `true`, then count one completion."""
    subprocess.run(["true"], check=True)
    _redis().incr(done_key())


def chain_step(k: int, t0: float) -> None:
    """Spawn `true`; enqueue step k+1 on the same queue, or, on the last step, record time.time() - t0."""
    subprocess.run(["true"], check=True)
    if k < CHAIN_LENGTH:
        from rq import Queue, get_current_job

        job = get_current_job()
        assert job is not None, "chain_step must run as an RQ job"
        Queue(job.origin, connection=job.connection).enqueue("peer_tasks.chain_step", k + 1, t0)
    else:
        _redis().rpush(lat_key(), time.time() - t0)


def celery_available() -> bool:
    """Whether Celery can be imported (it is optional: pip install '.[bench]')."""
    return importlib.util.find_spec("celery") is not None


def make_app(url: str, queue: str) -> Any:
    """A Celery app on broker `url` whose tasks go to `queue`, with the benchmark's task registered."""
    from celery import Celery

    capp = Celery("peer_tasks", broker=url, set_as_current=False)
    capp.conf.update(
        task_ignore_result=True,  # no result backend: the done counter is the only output
        result_backend=None,
        task_default_queue=queue,
        # Celery's defaults (early ack, prefetch 4 per pool process) already suit many short tasks; a user would
        # not change them for a first deployment. BENCH_CELERY_PREFETCH exists to check that claim.
        worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "4")),
        task_acks_late=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,  # silences a deprecation warning on 5.x
    )
    # shared=False: each app gets exactly this one task, not every task any other app registered.
    capp.task(name="peer_tasks.run_true", ignore_result=True, shared=False)(run_true)
    return capp


app: Any  # declared only, so that the module's __getattr__ below builds it on first access


def __getattr__(name: str) -> Any:
    """`app`, what `celery -A peer_tasks worker` loads, built on first access (from BENCH_REDIS_URL)."""
    # Lazy on purpose: a forking `rq worker` imports this module afresh in every work horse, and importing Celery
    # there would cost ~50 ms per RQ job that has nothing to do with RQ.
    global app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                   os.environ.get("BENCH_CELERY_QUEUE", "bench-celery"))
    return app
