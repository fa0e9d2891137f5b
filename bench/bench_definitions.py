"""Definitions benchmark: load + validate 10,000 jobs; trigger lookups/s with 10 vs 100,000 definitions.

    python bench/bench_definitions.py [--jobs 10000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from angora_rq.definitions.load import load_config
from angora_rq.core.graph import Graph
from angora_rq.core.model import JobDef
from angora_rq.core.topics import TriggerIndex


def write_definitions(folder: Path, n: int, per_file: int = 1000) -> None:
    """n jobs in files of per_file: a chain of exact topics, one pattern job in twenty."""
    for f in range(0, n, per_file):
        lines = []
        for i in range(f, min(n, f + per_file)):
            trigger = f"bench.{i % 97}.*" if i % 20 == 0 else f"bench.job.{i}"
            lines.append(f"- name: job_{i}\n  triggers: ['{trigger}']\n  command: echo {i}\n"
                         f"  messages: [bench.job.{i + 1}]\n  replay: 2\n  timeout: 5m\n")
        (folder / f"jobs_{f // per_file:03}.yml").write_text("".join(lines))


def bench_load(n: int) -> dict:
    """Time and memory of load_config over n generated jobs."""
    with tempfile.TemporaryDirectory() as tmp:
        write_definitions(Path(tmp), n)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        tracemalloc.start()
        t0 = time.perf_counter()
        config = load_config(tmp)
        load_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t0 = time.perf_counter()
        graph = Graph(config.jobs, config.schedules)
        graph.plan("bench.job.0")
        graph_s = time.perf_counter() - t0
    return {"jobs": len(config.jobs), "bytes": size, "load_s": load_s, "jobs_per_s": len(config.jobs) / load_s,
            "peak_traced_mib": peak / 2**20, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "graph_and_plan_s": graph_s}


def make_jobs(n: int) -> list[JobDef]:
    """n jobs: exact triggers, and one pattern trigger in twenty (each pattern distinct, so a topic matches the
    same number of jobs however many are defined: what grows is only the index)."""
    return [JobDef(name=f"j{i}", triggers=(f"t.p{i}.*" if i % 20 == 0 else f"t.job.{i}",), command=("true",))
            for i in range(n)]


def lookups_per_s(n_defs: int, lookups: int = 200_000, reps: int = 5) -> dict:
    """Median lookups/s over a mix of topics that hit exact triggers, patterns, and nothing.

    The index's own work: its memory of recent lookups (which would answer all 1,000 topics here) is off.
    """
    index = TriggerIndex(make_jobs(n_defs), remember=0)
    rnd = random.Random(1)
    topics = [rnd.choice([f"t.job.{rnd.randrange(1, n_defs)}", f"t.p{20 * rnd.randrange(n_defs // 20 or 1)}.x",
                          "nothing.here"]) for _ in range(1000)]
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(lookups):
            index.lookup(topics[i % 1000])
        rates.append(lookups / (time.perf_counter() - t0))
    return {"definitions": n_defs, "lookups_per_s": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    load = bench_load(args.jobs)
    small, big = lookups_per_s(10), lookups_per_s(100_000)
    ratio = big["lookups_per_s"] / small["lookups_per_s"]
    print(f"load + validate {load['jobs']} jobs ({load['bytes'] / 1024:.0f} KiB): {load['load_s']:.2f} s "
          f"({load['jobs_per_s']:.0f} jobs/s), peak traced {load['peak_traced_mib']:.1f} MiB, "
          f"max RSS {load['maxrss_mib']:.0f} MiB; graph + plan {load['graph_and_plan_s'] * 1000:.0f} ms")
    print(f"{'definitions':>12} {'lookups/s (median)':>20} {'min':>12} {'max':>12}")
    for row in (small, big):
        print(f"{row['definitions']:>12} {row['lookups_per_s']:>20,.0f} {row['min']:>12,.0f} {row['max']:>12,.0f}")
    print(f"100,000 vs 10 definitions: {ratio:.2f}x the lookup rate (1.0 = flat)")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "lookups": [small, big], "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
