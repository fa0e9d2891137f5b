"""What one Redis gives a deployment: Redis CPU and commands per job, and the cost of ANGORA_DURABILITY=replicated.

    python bench/bench_scaling.py                 # 3 repetitions of 2,000 jobs per mode (about 3 minutes)
    python bench/bench_scaling.py --jobs 500 --reps 1 --json out.json

A private primary (AOF everysec, as `angora up` ships it) with one replica on loopback. Per repetition and per
durability mode (primary, replicated), in turn:

- end to end: a matcher and two workers run `--jobs` trivial jobs (`true`) sent through the Python API;
  jobs/s, and what Redis spent per job (putting each run into the run indexes included, which a janitor does
  within seconds): CPU of its main thread (INFO cpu), commands, and microseconds per
  command type (INFO commandstats) - the ceiling of one Redis core is 1 / (CPU per job);
- accepting: `--sends` messages sent one by one (bus.send, what /send does), messages/s.

Redis memory per retained execution and per queued message is bench/run.py's `memory` section.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402

import angora_bench as A  # noqa: E402
from angora_rq.core.keys import Keys  # noqa: E402
from angora_rq.core.messages import Message  # noqa: E402
from angora_rq.core.settings import Settings  # noqa: E402
from angora_rq.processes.redis_server import RedisServer, free_port  # noqa: E402
from angora_rq.store.bus import send  # noqa: E402
from angora_rq.store.replication import wait_command  # noqa: E402
from angora_rq.store.runindex import RunIndex  # noqa: E402
from harness import fresh_db, machine, start_redis, summary, wait_until  # noqa: E402

MODES = ("primary", "replicated")


def redis_cpu(r: redis.Redis) -> float:
    """CPU seconds of Redis' main thread (where commands run), else of the whole server."""
    cpu = r.info("cpu")
    if "used_cpu_user_main_thread" in cpu:
        return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def commandstats(r: redis.Redis) -> dict[str, tuple[int, float]]:
    """command -> (calls, microseconds) so far."""
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
            for k, v in r.info("commandstats").items()}


def end_to_end(url: str, n: int, log_dir: Path) -> dict[str, Any]:
    """n trivial jobs through a matcher and two workers; jobs/s and Redis' cost per job."""
    with A.system(url, log_dir, workers=2) as s:
        r, keys = s["r"], s["keys"]
        A._send_api(r, keys, A.WARMUP)
        wait_until(lambda: A._succeeded(r, keys, "bench_true") >= A.WARMUP, 60, 0.01, "warm-up jobs")
        RunIndex(r, keys).settle()  # the warm-up's runs, before the window
        cpu0, stats0, t0 = redis_cpu(r), commandstats(r), time.perf_counter()
        A._send_api(r, keys, n)
        t_end = wait_until(lambda: A._succeeded(r, keys, "bench_true") >= A.WARMUP + n, max(60.0, n / 10), 0.02,
                           f"{n} jobs to finish")
        RunIndex(r, keys).settle()  # what a janitor does with these runs within seconds, counted too
        cpu, stats1 = redis_cpu(r) - cpu0, commandstats(r)
    per_command = {name: {"calls_per_job": (c - stats0.get(name, (0, 0.0))[0]) / n,
                          "usec_per_job": (u - stats0.get(name, (0, 0.0))[1]) / n}
                   for name, (c, u) in stats1.items() if c > stats0.get(name, (0, 0.0))[0]}
    per_command.pop("info", None)
    seconds = t_end - t0
    return {"jobs": n, "jobs_per_s": n / seconds, "redis_cpu_ms_per_job": cpu * 1000 / n,
            "redis_core_ceiling_jobs_per_s": n / cpu if cpu else None,
            "redis_cmds_per_job": sum(v["calls_per_job"] for v in per_command.values()),
            "redis_usec_per_job_in_commands": sum(v["usec_per_job"] for v in per_command.values()),
            "commands": dict(sorted(per_command.items(), key=lambda kv: -kv[1]["usec_per_job"]))}


def accepting(url: str, n: int, mode: str) -> dict[str, Any]:
    """n messages accepted one by one (SEND, plus WAIT 1 in replicated mode); messages/s."""
    r, keys = redis.Redis.from_url(url), Keys("angora")
    wait = wait_command(Settings(durability=mode))
    t0 = time.perf_counter()
    for _ in range(n):
        send(r, keys, Message.create("bench.true", None, None, origin="bench"), wait=wait)
    seconds = time.perf_counter() - t0
    r.close()
    return {"messages": n, "messages_per_s": n / seconds, "us_per_message": seconds * 1e6 / n}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--sends", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="angora-scaling-"))
    primary = start_redis(work / "primary")
    replica = RedisServer(data_dir=work / "replica", port=free_port(), appendonly=False,
                          extra_args=("--databases", "64", "--replicaof", "127.0.0.1", str(primary.port))).start()
    results: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    sends: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        r = redis.Redis(port=primary.port)
        wait_until(lambda: r.info("replication")["connected_slaves"] >= 1, 30, 0.1, "the replica")
        db = 0
        for rep in range(args.reps):
            for mode in MODES:
                os.environ["ANGORA_DURABILITY"] = mode  # the roles read it (angora_bench copies os.environ)
                db += 1
                runs[mode].append(end_to_end(fresh_db(primary, db), args.jobs, work / f"logs-{mode}-{rep}"))
                db += 1
                sends[mode].append(accepting(fresh_db(primary, db), args.sends, mode))
                print(f"rep {rep + 1} {mode:10}: {runs[mode][-1]['jobs_per_s']:7.0f} jobs/s, "
                      f"{runs[mode][-1]['redis_cpu_ms_per_job']:.3f} ms Redis CPU/job, "
                      f"{sends[mode][-1]['messages_per_s']:7.0f} sends/s", flush=True)
    finally:
        os.environ.pop("ANGORA_DURABILITY", None)
        replica.stop()
        primary.stop()
    for mode in MODES:
        results[mode] = {
            "jobs_per_s": summary([x["jobs_per_s"] for x in runs[mode]]),
            "redis_cpu_ms_per_job": summary([x["redis_cpu_ms_per_job"] for x in runs[mode]]),
            "redis_core_ceiling_jobs_per_s": summary([x["redis_core_ceiling_jobs_per_s"] for x in runs[mode]]),
            "redis_cmds_per_job": summary([x["redis_cmds_per_job"] for x in runs[mode]]),
            "sends_per_s": summary([x["messages_per_s"] for x in sends[mode]]),
            "commands_last_run": runs[mode][-1]["commands"],
        }
    p, rp = results["primary"], results["replicated"]
    results["replicated_vs_primary"] = {
        "jobs_per_s": rp["jobs_per_s"]["median"] / p["jobs_per_s"]["median"],
        "sends_per_s": rp["sends_per_s"]["median"] / p["sends_per_s"]["median"]}
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    out = args.json or work / "scaling.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
