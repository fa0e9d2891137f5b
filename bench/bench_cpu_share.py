"""Where a job's CPU goes, by process: the web, the matcher, the workers, the commands, Redis, the clients.

    python bench/bench_cpu_share.py                     # 6,000 jobs through /send, then through the API
    python bench/bench_cpu_share.py --via http --jobs 3000 --reps 3 --json out.json

Runs `throughput()` of run.py (its system: the Procfile's web server, a matcher, 2 workers; a fresh Redis) and
reads the CPU of every process it started (and of itself) from /proc at the start and the end of the timed window:
its own (user + system) and what it reaped of its children (the commands, which the workers spawn and wait for).
Each process counts under the role it belongs to (its own command line or its nearest ancestor's). The spawn
ceiling (2 processes spawning `true`, measured beside it) says what the commands alone may cost: end to end at
half the ceiling leaves 2 cores / (ceiling / 2) of CPU per job for everything, commands included.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import angora_bench as A  # noqa: E402
import peers as P  # noqa: E402
from harness import fresh_db, machine, start_redis, stat_fields  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
# (role, a piece of the command line that names it); the first that matches wins
ROLES = (("redis", "redis-server"), ("web", "angora\0web"), ("matcher", "angora_rq.cli\0matcher"),
         ("worker", "angora_rq.cli\0worker"))
ME = os.getpid()


class Proc(NamedTuple):
    """One process as /proc showed it."""

    ppid: int
    cmd: str  # its command line, NUL-separated
    own: float  # CPU seconds it used (user + system)
    reaped: float  # CPU seconds of the children it reaped


Procs = dict[int, Proc]


def processes() -> Procs:
    """Every process of the machine, by pid."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = stat_fields(int(d.name))
            cmd = (d / "cmdline").read_text()
        except (OSError, IndexError):
            continue
        out[int(d.name)] = Proc(int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / HZ,
                                (int(fields[13]) + int(fields[14])) / HZ)
    return out


def role_of(pid: int, procs: Procs) -> Optional[str]:
    """The role of pid, one of this benchmark's descendants: its own command line's, else its nearest ancestor's
    ("clients": this process itself). None for every other process of the machine (other tests' servers, say)."""
    role: Optional[str] = None
    seen = 0
    while pid in procs and seen < 64:
        if pid == ME:
            return role or "clients"
        if role is None:
            role = next((name for name, mark in ROLES if mark in procs[pid].cmd), None)
        pid, seen = procs[pid].ppid, seen + 1
    return None


def shares(before: Procs, after: Procs, jobs: int) -> dict[str, float]:
    """CPU per job in microseconds, per role (own) and per role's reaped children ("<role> children")."""
    out: dict[str, float] = {}
    for pid, now in after.items():
        role = role_of(pid, after)
        if role is None:
            continue
        then = before.get(pid, Proc(now.ppid, now.cmd, 0.0, 0.0))
        out[role] = out.get(role, 0.0) + (now.own - then.own) / jobs * 1e6
        if now.reaped - then.reaped > 0:
            key = f"{role} children"
            out[key] = out.get(key, 0.0) + (now.reaped - then.reaped) / jobs * 1e6
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def one(via: str, jobs: int) -> dict[str, Any]:
    """One throughput() run on a fresh Redis, with the CPU shares of its window."""
    work = Path(tempfile.mkdtemp(prefix="angora-cpu-share-"))
    server = start_redis(work / "redis")
    marks: dict[str, Procs] = {}
    try:
        res = A.throughput(fresh_db(server, 1), jobs, work, via=via,
                           window=lambda at: marks.__setitem__(at, processes()))
    finally:
        server.stop()
    per = shares(marks["start"], marks["end"], res["jobs"])
    return {"via": via, "jobs_per_s": round(res["jobs_per_s"]), "seconds": round(res["seconds"], 3),
            "cpu_us_per_job": per, "total_us_per_job": round(sum(per.values()), 1),
            "two_cores_us_per_job": round(2 * res["seconds"] / res["jobs"] * 1e6, 1)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--via", default="http,api", help="http, api or both (comma-separated)")
    ap.add_argument("--jobs", type=int, default=6000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    runs = [one(via, args.jobs) for _ in range(args.reps) for via in args.via.split(",") if via]
    ceiling = P.spawn_ceiling(args.jobs)["jobs_per_s"]
    budget = 2 / (ceiling / 2) * 1e6  # the ceiling's 2 processes keep 2 cores busy (this VM has 2)
    for run in runs:
        print(f"\n{run['via']}: {run['jobs_per_s']:,} jobs/s; CPU per job (us), {run['total_us_per_job']:,.0f} in all "
              f"(2 cores over the window: {run['two_cores_us_per_job']:,.0f})")
        for role, us in run["cpu_us_per_job"].items():
            print(f"  {role:18s} {us:8,.0f}")
    print(f"\nspawn ceiling {ceiling:,.0f}/s (2 processes): half of it leaves {budget:,.0f} us of 2 cores' CPU per job "
          f"({os.cpu_count()} cores here)")
    if args.json:
        out = {"machine": machine(), "ceiling": ceiling, "half_ceiling_us_per_job_2_cores": budget, "runs": runs,
               "median_total": statistics.median(r["total_us_per_job"] for r in runs)}
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
