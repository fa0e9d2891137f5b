"""How fast the UI pages render with a lot of history: p50/p95 of the dashboard, job, run and other pages.

Starts a private redis-server, writes 100,000 executions of one job (in the layout state.State.create uses,
pipelined), 150 jobs with statistics and 2,000 runs of a 150-job plan (a tenth failed, a tenth still running),
settles the run indexes once (as the janitors do), then times each page, filtered run lists included, through
Flask's test client. Target: p95 under 100 ms. Prints a table and writes JSON (default bench/results/pages.json).

    python bench/bench_pages.py [--executions 100000] [--requests 50] [--out bench/results/pages.json]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.plans import plan_ref
from angora_rq.core.schema import Defs, Exec, JobStats, Run
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_rq.core.settings import Settings
from angora_rq.store.runindex import RunIndex

JOBS = 150
RUNS = 2_000
BATCH = 5_000
HOT = "hot_job"
TARGET_MS = 100.0
VERSION = "benchversion"


def definitions(folder: Path, jobs: int) -> list[str]:
    """Write a YAML file of `jobs` jobs: a hot job fanning out into a layered DAG; return the job names."""
    names = [HOT] + [f"job_{i:03d}" for i in range(1, jobs)]
    rnd = random.Random(7)
    lines = [f"- name: {HOT}\n  triggers: [bench.start]\n  command: echo hot\n  messages: [bench.done.{HOT}]\n"]
    for i, name in enumerate(names[1:], start=1):
        parent = names[rnd.randrange(max(0, i - 12), i)]
        lines.append(f"- name: {name}\n  triggers: [bench.done.{parent}]\n  command: echo {i}\n"
                     f"  messages: [bench.done.{name}]\n")
    (folder / "bench.yml").write_text("".join(lines))
    return names


def fill_executions(r: redis.Redis, keys: Keys, count: int, runs: list[str]) -> list[str]:
    """`count` finished executions of the hot job (fields as State.create + finalize write them)."""
    now = time.time()
    ids = []
    spec = json.dumps({"name": HOT, "triggers": ["bench.start"], "command": ["echo", "hot"], "messages": []})
    r.hset(keys.definitions(VERSION), Defs.job + HOT, spec)
    for start in range(0, count, BATCH):
        with r.pipeline(transaction=False) as p:
            for i in range(start, min(count, start + BATCH)):
                xid = uuid.uuid4().hex
                ids.append(xid)
                created = now - (count - i) * 10.0
                ok = i % 10 != 0
                run = runs[i % len(runs)]
                fields: dict[Any, Any] = {
                    Exec.job: HOT, Exec.run: run, Exec.attempt: 1, Exec.status: "succeeded" if ok else "failed",
                    Exec.queue: "default", Exec.topic: "bench.start", Exec.origin: "bench",
                    Exec.config_version: VERSION, Exec.created: repr(created), Exec.started: repr(created + 0.01),
                    Exec.ended: repr(created + 1.2), Exec.duration: "1.190000", Exec.exit_code: 0 if ok else 1,
                    Exec.reason: "exit", Exec.worker: "bench", Exec.host: "bench"}
                p.hset(keys.execution(xid), mapping=fields)
                p.set(keys.tail(xid), f"line {i}\n" * 20)
                p.lpush(keys.job_executions(HOT), xid)
                p.hset(keys.run(run), Run.execution + xid, HOT)
            p.execute()
    return ids


def fill_runs(r: redis.Redis, keys: Keys, names: list[str], runs: list[str], last: str) -> None:
    """Runs whose plan holds every job, each job with a status and its latest execution: one run in ten failed,
    one in ten still running, the others succeeded. Each is marked unsettled, as SEND marks a new run."""
    plan = json.dumps({"jobs": names, "parents": {n: ([] if n == HOT else [HOT]) for n in names},
                       "depth": {n: (0 if n == HOT else 1) for n in names}})
    r.hset(keys.definitions(VERSION), Defs.plan + plan_ref(plan), plan)
    now = time.time()
    with r.pipeline(transaction=False) as p:
        for k, run in enumerate(runs):
            live = k % 10 == 1
            fields: dict[Any, Any] = {Run.created: repr(now - k), Run.topic: "bench.start", Run.origin: "bench",
                                      Run.plan: plan_ref(plan), Run.config_version: VERSION,
                                      Run.active: 1 if live else 0}
            if not live:
                fields[Run.ended] = repr(now - k + 30)  # the runs list shows its duration
            for j, name in enumerate(names):
                status = "succeeded"
                if k % 10 == 0 and j == k % len(names):
                    status = "failed"
                elif live and j > len(names) // 2:
                    status = "running" if j % 2 else "queued"
                fields[Run.job_status + name] = status
                fields[Run.job_execution + name] = last
            p.hset(keys.run(run), mapping=fields)
            p.zadd(keys.runs(), {run: now - k})
            p.hincrby(keys.runs_unsettled(), run, 1)
        p.execute()


def fill_stats(r: redis.Redis, keys: Keys, names: list[str], last: str, runs: list[str], count: int) -> None:
    """Job statistics for every job (the hot one with its real counts)."""
    with r.pipeline(transaction=False) as p:
        for name in names:
            ok = count - count // 10 if name == HOT else 90
            p.hset(keys.job_stats(name), mapping={
                JobStats.last_status: "succeeded", JobStats.last_execution: last, JobStats.last_run: runs[0],
                JobStats.last_started: repr(time.time() - 5), JobStats.last_ended: repr(time.time() - 4),
                JobStats.last_duration: "1.190000", JobStats.succeeded: ok,
                JobStats.failed: count // 10 if name == HOT else 10})
        p.execute()


def time_page(client: Any, url: str, requests: int) -> dict[str, float]:
    """p50/p95/max in milliseconds over `requests` GETs (after 3 warm-up requests)."""
    for _ in range(3):
        resp = client.get(url, headers={"Accept": "text/html"})
        if resp.status_code != 200:
            raise SystemExit(f"{url}: HTTP {resp.status_code}\n{resp.get_data(as_text=True)[:800]}")
    samples, cpu = [], []
    for _ in range(requests):
        t0, c0 = time.perf_counter(), time.thread_time()
        client.get(url, headers={"Accept": "text/html"})
        samples.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    samples.sort()
    return {"p50": statistics.median(samples), "p95": samples[int(0.95 * (len(samples) - 1))],
            "max": samples[-1], "cpu_p50": statistics.median(cpu), "requests": requests}


def main() -> int:
    """Fill a private Redis, time the pages, print and save the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executions", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "pages.json")
    args = ap.parse_args()
    from angora_rq.web import create_app

    with tempfile.TemporaryDirectory(prefix="angora-bench-pages-") as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        names = definitions(root / "config", JOBS)
        server = RedisServer(data_dir=root / "redis", port=free_port(), appendonly=False).start()
        try:
            keys = Keys("bench")
            r = redis.Redis.from_url(f"{server.url}/0")
            runs = [f"bench-run-{k:05d}" for k in range(RUNS)]
            t0 = time.perf_counter()
            ids = fill_executions(r, keys, args.executions, runs)
            fill_runs(r, keys, names, runs, ids[-1])
            fill_stats(r, keys, names, ids[-1], runs, args.executions)
            RunIndex(r, keys).settle()  # what the janitors do every few seconds
            fill_s = time.perf_counter() - t0
            settings = Settings(redis_url=f"{server.url}/0", prefix=keys.prefix, config_path=root / "config",
                                data_dir=root / "data", history=args.executions + 1)
            client = create_app({"SETTINGS": settings}).test_client()
            pages = {
                "dashboard (150 jobs)": "/",
                "job page, newest": f"/jobs/{HOT}",
                "job page, page 2000": f"/jobs/{HOT}?page=2000",
                "run page (150-job plan)": f"/runs/{runs[0]}",
                "runs list": "/runs",
                "runs list, page 60": "/runs?page=60",
                "runs, status failed": "/runs?status=failed",
                "runs, status failed, page 5": "/runs?status=failed&page=5",
                "runs, status succeeded": "/runs?status=succeeded",
                "runs, status running": "/runs?status=running",
                "runs, job": f"/runs?job={names[5]}",
                "runs, job, page 40": f"/runs?job={names[5]}&page=40",
                "runs, failed + job": f"/runs?status=failed&job={names[5]}",
                "runs, running + job": f"/runs?status=running&job={names[-1]}",
                "API runs, failed, offset 150": "/api/v1/runs?status=failed&limit=50&offset=150",
                "execution page": f"/executions/{ids[-1]}",
                "workflows (150 jobs)": "/workflows",
                "schedules": "/schedules",
                "config": "/config",
                "send a message": "/messages/new",
            }
            results = {name: time_page(client, url, args.requests) for name, url in pages.items()}
        finally:
            server.stop()
    report(results, args.executions, fill_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"executions": args.executions, "jobs": JOBS, "runs": RUNS,
                                    "target_p95_ms": TARGET_MS, "pages": results}, indent=2))
    print(f"\nwrote {args.out}")
    return 0 if all(v["p95"] < TARGET_MS for v in results.values()) else 1


def report(results: dict[str, dict[str, float]], executions: int, fill_s: float) -> None:
    """Print the table."""
    print(f"{executions:,} executions of one job, {JOBS} jobs, {RUNS:,} runs (filled in {fill_s:.1f} s)\n")
    print(f"{'page':<32}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'CPU p50':>9}  target p95 < {TARGET_MS:.0f} ms")
    for name, v in results.items():
        mark = "ok" if v["p95"] < TARGET_MS else "SLOW"
        print(f"{name:<32}{v['p50']:>9.1f}{v['p95']:>9.1f}{v['max']:>9.1f}{v['cpu_p50']:>9.1f}  {mark}")
    print("(CPU p50: the web process's own CPU per request, Redis's excluded: steadier than wall time on a busy VM)")


if __name__ == "__main__":
    sys.exit(main())
