"""The peers Angora is compared with: stock RQ workers, RQ's SimpleWorker pool, Celery, and raw process spawning.

Each public function takes one measurement and returns a JSON-able dict; the caller repeats and summarises.
Every job spawns `true` and INCRs a counter (bench/peer_tasks.py), so all peers do the same work as Angora.
Standalone check, with its own Redis and small n:

    python bench/peers.py [--n 300] [--reps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # workers import `peer_tasks` by that name, and so do we
    sys.path.insert(0, str(BENCH_DIR))

import redis  # noqa: E402
from rq import Queue, Worker  # noqa: E402
from rq.worker import BaseWorker  # noqa: E402

import peer_tasks  # noqa: E402
from harness import (Procs, commands_total, descendants, fresh_db, percentile, start_redis,  # noqa: E402
                     tree_rss_mib, wait_until)

POLL = 0.005  # done-counter poll interval: one GET per poll, subtracted from the command count
SETTLE = 0.2  # after the last INCR, let the worker finish that job's bookkeeping before reading the counters
RQ = [sys.executable, "-m", "rq.cli"]
CELERY = [sys.executable, "-m", "celery"]
RQ_MODES: dict[str, tuple[list[str], int, int]] = {  # mode -> (rq CLI arguments, processes, workers each registers)
    "rq_worker": (["worker"], 1, 1),
    "rq_worker_2": (["worker"], 2, 1),
    "rq_pool_simple_2": (["worker-pool", "-n", "2", "-w", "rq.worker.SimpleWorker"], 1, 2),
    "rq_simple": (["worker", "-w", "rq.worker.SimpleWorker"], 1, 1),
}
CELERY_SKIPPED = {"skipped": "celery not installed (pip install '.[bench]')"}

WARMUP = 20  # jobs run before each throughput measurement (fewer than Angora's 50: stock RQ is slow)


def _timeout(n: int) -> float:
    """How long n jobs may take before we call it a hang (10 jobs/s is far below any peer)."""
    return max(60.0, n / 10)


def _tag(mode: str) -> str:
    """A unique name for one measurement's queue and keys, so leftovers of an earlier run cannot interfere."""
    return f"peer-{mode.replace('_', '-')}-{uuid.uuid4().hex[:8]}"


def _env(url: str, tag: str) -> dict[str, str]:
    """Environment of worker processes: import path and where peer_tasks writes."""
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BENCH_REDIS_URL": url, "BENCH_DONE_KEY": f"{tag}:done",
            "BENCH_LAT_KEY": f"{tag}:lat", "BENCH_CELERY_QUEUE": tag}


def _wait(predicate: Callable[[], Any], timeout: float, what: str, procs: Optional[Procs] = None,
          interval: float = POLL) -> tuple[float, int]:
    """harness.wait_until, also counting the polls (their Redis commands are subtracted from the peer's)."""
    polls = 0

    def counted() -> Any:
        nonlocal polls
        polls += 1
        return predicate()

    return wait_until(counted, timeout, interval, what, procs), polls


def _wait_count(r: redis.Redis, key: str, n: int, timeout: float, procs: Optional[Procs]) -> tuple[float, int]:
    """Wait until counter `key` reaches n; (time, GETs issued)."""
    return _wait(lambda: int(r.get(key) or 0) >= n, timeout, f"{key} to reach {n}", procs)


def _rate(n: int, seconds: float, cmds: Optional[float] = None) -> dict[str, Any]:
    """The common result shape."""
    out: dict[str, Any] = {"jobs": n, "seconds": seconds, "jobs_per_s": n / seconds}
    if cmds is not None:
        out["redis_cmds_per_job"] = cmds
    return out


# --- RQ ---------------------------------------------------------------------------------------------------------

def _start_rq(procs: Procs, url: str, mode: str, queue: str, env: dict[str, str]) -> int:
    """Start the workers of `mode` on `queue`; return how many workers will register."""
    if mode not in RQ_MODES:
        raise ValueError(f"unknown RQ mode {mode!r}; one of {sorted(RQ_MODES)}")
    args, copies, registers = RQ_MODES[mode]
    for i in range(copies):
        procs.start(f"{queue}-{i}", RQ + args + ["--url", url, queue], env=env)
    return copies * registers


def _idle_workers(r: redis.Redis, queue: str) -> list[BaseWorker]:
    """Workers registered on `queue` that are idle."""
    return [w for w in Worker.all(queue=Queue(queue, connection=r)) if w.get_state() == "idle"]


def _wait_rq_idle(r: redis.Redis, queue: str, count: int, procs: Procs, timeout: float = 60.0) -> None:
    """Wait until `count` workers on `queue` are registered and idle."""
    _wait(lambda: len(_idle_workers(r, queue)) >= count, timeout, f"{count} idle RQ workers on {queue}", procs,
          interval=0.05)


def rq_throughput(url: str, n: int, log_dir: Path, mode: str) -> dict[str, Any]:
    """Jobs/s and Redis commands/job of stock RQ workers (`rq_worker`, `rq_worker_2`, `rq_pool_simple_2`)."""
    r = redis.Redis.from_url(url)
    tag = _tag(mode)
    env = _env(url, tag)
    q = Queue(tag, connection=r)
    datas = [Queue.prepare_data("peer_tasks.run_true") for _ in range(n)]
    with Procs(log_dir) as procs:
        _wait_rq_idle(r, tag, _start_rq(procs, url, mode, tag, env), procs)
        # Warm up as Angora's measurement does: a few jobs run and finish before the clock starts.
        q.enqueue_many([Queue.prepare_data("peer_tasks.run_true") for _ in range(WARMUP)])
        _wait_count(r, env["BENCH_DONE_KEY"], WARMUP, _timeout(WARMUP), procs)
        c0 = commands_total(r)
        t0 = time.perf_counter()
        pipe = r.pipeline()
        q.enqueue_many(datas, pipeline=pipe)
        pipe.execute()
        t1, polls = _wait_count(r, env["BENCH_DONE_KEY"], WARMUP + n, _timeout(n), procs)
        time.sleep(SETTLE)
        c1 = commands_total(r)
    return _rate(n, t1 - t0, (c1 - c0 - polls - n) / n)


def rq_enqueue_many_rate(url: str, n: int) -> dict[str, Any]:
    """Jobs/s of `Queue.enqueue_many` of n prepared jobs in one pipeline, no worker running."""
    r = redis.Redis.from_url(url)
    q = Queue(_tag("enqueue"), connection=r)
    c0 = commands_total(r)
    t0 = time.perf_counter()
    pipe = r.pipeline()
    q.enqueue_many([Queue.prepare_data("peer_tasks.run_true") for _ in range(n)], pipeline=pipe)
    pipe.execute()
    seconds = time.perf_counter() - t0
    c1 = commands_total(r)
    q.empty()  # nobody will run them; do not leave n job hashes behind
    return _rate(n, seconds, (c1 - c0) / n)


def rq_chain_latency(url: str, reps: int, log_dir: Path, mode: str) -> dict[str, Any]:
    """p50/p99 ms of a 3-job chain (each job enqueues the next) on one idle `rq_worker` or `rq_simple`."""
    if mode not in ("rq_worker", "rq_simple"):
        raise ValueError(f"unknown chain mode {mode!r}; one of rq_worker, rq_simple")
    r = redis.Redis.from_url(url)
    tag = _tag(mode)
    env = _env(url, tag)
    q = Queue(tag, connection=r)
    samples: list[float] = []
    with Procs(log_dir) as procs:
        _wait_rq_idle(r, tag, _start_rq(procs, url, mode, tag, env), procs)
        for _ in range(reps):
            q.enqueue("peer_tasks.chain_step", 1, time.time())
            got = r.blpop([env["BENCH_LAT_KEY"]], timeout=30)
            if got is None:
                procs.check()
                raise TimeoutError(f"chain on {tag} did not finish in 30s; see logs in {log_dir}")
            samples.append(float(got[1]) * 1000)
            # Start each chain on an idle worker, as a lone trigger would find it.
            _wait_rq_idle(r, tag, 1, procs, timeout=30)
            time.sleep(0.02)
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99), "samples": reps}


# --- Celery -----------------------------------------------------------------------------------------------------

def _start_celery(procs: Procs, tag: str, env: dict[str, str]) -> str:
    """Start `celery worker --pool prefork -c 2` on queue `tag`; return its node name."""
    node = f"{tag}@{socket.gethostname()}"
    procs.start(tag, CELERY + ["-A", "peer_tasks", "worker", "--pool", "prefork", "-c", "2", "--without-gossip",
                               "--without-mingle", "--without-heartbeat", "-Q", tag, "-n", node], env=env)
    return node


@contextmanager
def _celery(url: str, log_dir: Path, tag: str) -> Iterator[tuple[Any, Procs]]:
    """A ready celery worker on queue `tag`, and a client app on the same broker; both closed afterwards."""
    client = peer_tasks.make_app(url, tag)
    try:
        with Procs(log_dir) as procs:
            node = _start_celery(procs, tag, _env(url, tag))
            # A ping reply means the worker's consumer is running.
            _wait(lambda: client.control.ping(destination=[node], timeout=0.5), 60, f"celery {node} to answer ping",
                  procs, interval=0.1)
            yield client, procs
    finally:
        client.close()


def _send_celery(client: Any, n: int) -> None:
    """Publish n tasks through one shared producer (apply_async's documented `producer=` option)."""
    task = client.tasks["peer_tasks.run_true"]
    with client.producer_or_acquire() as producer:
        for _ in range(n):
            task.apply_async(producer=producer)


def celery_throughput(url: str, n: int, log_dir: Path) -> dict[str, Any]:
    """Jobs/s and Redis commands/job of `celery worker --pool prefork -c 2` (Redis broker, no results)."""
    if not peer_tasks.celery_available():
        return dict(CELERY_SKIPPED)
    r = redis.Redis.from_url(url)
    tag = _tag("celery")
    with _celery(url, log_dir, tag) as (client, procs):
        done_key = _env(url, tag)["BENCH_DONE_KEY"]
        _send_celery(client, WARMUP)  # warm-up, as for Angora
        _wait_count(r, done_key, WARMUP, _timeout(WARMUP), procs)
        c0 = commands_total(r)
        t0 = time.perf_counter()
        _send_celery(client, n)
        t1, polls = _wait_count(r, done_key, WARMUP + n, _timeout(n), procs)
        time.sleep(SETTLE)
        c1 = commands_total(r)
    return _rate(n, t1 - t0, (c1 - c0 - polls - n) / n)


# --- spawn ceiling and memory -----------------------------------------------------------------------------------

_SPAWN_CHILD = ("import subprocess, sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
                "for _ in range(int(sys.argv[1])):\n    subprocess.run(['true'])\n")


def spawn_ceiling(n: int, procs: int = 2) -> dict[str, Any]:
    """Jobs/s of `procs` Python processes doing nothing but subprocess.run(["true"]), n in all."""
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    children = [subprocess.Popen([sys.executable, "-c", _SPAWN_CHILD, str(k)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, start_new_session=True) for k in shares]
    try:
        for c in children:  # interpreters started and imported: only the spawning is timed
            if c.stdout is None or c.stdout.readline().strip() != "ready":
                raise RuntimeError(f"spawn child exited with {c.wait()} before starting")
        t0 = time.perf_counter()
        for c in children:
            if c.stdin is not None:
                c.stdin.write("go\n")
                c.stdin.close()
        for c in children:
            if c.wait(timeout=_timeout(n)) != 0:
                raise RuntimeError(f"spawn child exited with {c.returncode}")
        return _rate(n, time.perf_counter() - t0)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()


def _tree(pid: int) -> tuple[float, int]:
    """(RSS MiB, process count) of pid and its descendants."""
    return tree_rss_mib(pid), 1 + len(descendants(pid))


def _rq_idle_rss(url: str, log_dir: Path, jobs: int) -> tuple[float, int]:
    """RSS of one stock `rq worker` after it ran `jobs` jobs and went idle."""
    r = redis.Redis.from_url(url)
    tag = _tag("rss-rq")
    env = _env(url, tag)
    with Procs(log_dir) as procs:
        _wait_rq_idle(r, tag, _start_rq(procs, url, "rq_worker", tag, env), procs)
        Queue(tag, connection=r).enqueue_many([Queue.prepare_data("peer_tasks.run_true") for _ in range(jobs)])
        _wait_count(r, env["BENCH_DONE_KEY"], jobs, 60, procs)
        _wait_rq_idle(r, tag, 1, procs)
        time.sleep(0.5)
        return _tree(procs.procs[0].pid)


def _celery_idle_rss(url: str, log_dir: Path, jobs: int) -> tuple[float, int]:
    """RSS of `celery worker -c 2` (main process and its pool) after it ran `jobs` tasks."""
    r = redis.Redis.from_url(url)
    tag = _tag("rss-celery")
    with _celery(url, log_dir, tag) as (client, procs):
        _send_celery(client, jobs)
        _wait_count(r, _env(url, tag)["BENCH_DONE_KEY"], jobs, 60, procs)
        time.sleep(0.5)
        return _tree(procs.procs[0].pid)


def idle_rss(url: str, log_dir: Path, jobs: int = 10) -> dict[str, Any]:
    """RSS MiB of an idle stock `rq worker` and of an idle `celery worker -c 2`, each after running a few jobs."""
    mib, count = _rq_idle_rss(url, log_dir, jobs)
    out: dict[str, Any] = {"rq_worker_mib": mib, "rq_worker_procs": count}
    if not peer_tasks.celery_available():
        out["celery_c2_mib"] = None
        out.update(CELERY_SKIPPED)
        return out
    mib, count = _celery_idle_rss(url, log_dir, jobs)
    out.update(celery_c2_mib=mib, celery_c2_procs=count)
    return out


# --- standalone check -------------------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> None:
    """Run every measurement once on a private Redis and print the results as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="jobs per throughput measurement")
    ap.add_argument("--reps", type=int, default=20, help="chains per latency measurement")
    ap.add_argument("--logs", type=Path, default=None, help="worker logs (default: a new temp dir, kept)")
    args = ap.parse_args(argv)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="angora-peers-logs-"))
    print(f"worker logs in {logs}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="angora-peers-") as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            results = _run_all(server, args.n, args.reps, logs)
        finally:
            server.stop()
    print(json.dumps(results, indent=2))


def _run_all(server: Any, n: int, reps: int, logs: Path) -> dict[str, Any]:
    """Each measurement on its own emptied db."""
    db = iter(range(1, 64))
    out: dict[str, Any] = {"spawn_ceiling": spawn_ceiling(n),
                           "rq_enqueue_many": rq_enqueue_many_rate(fresh_db(server, next(db)), n)}
    for mode in ("rq_worker", "rq_worker_2", "rq_pool_simple_2"):
        out[mode] = rq_throughput(fresh_db(server, next(db)), n, logs, mode)
    out["celery_c2"] = celery_throughput(fresh_db(server, next(db)), n, logs)
    for mode in ("rq_worker", "rq_simple"):
        out[f"chain_{mode}"] = rq_chain_latency(fresh_db(server, next(db)), reps, logs, mode)
    out["idle_rss"] = idle_rss(fresh_db(server, next(db)), logs)
    return out


if __name__ == "__main__":
    main()
