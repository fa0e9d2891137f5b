"""This checkout against another, sample by sample: /send -> command start and the 3-job chain, both systems up at once.

    python bench/bench_latency_pairs.py --against ../old-checkout --python ../old-venv/bin/python
    python bench/bench_latency_pairs.py --against ../old --python ../old-venv/bin/python --samples 400

A latency p50 of this VM moves by 30 % within minutes (bench/README.md): two `latency()` runs one after the other
compare two phases of the machine as much as two versions of the code. Here each side runs its own bench's system
(its Redis, matcher, workers and web, each side's own Python and code) in a subprocess, and both stay up; the
samples alternate between them (A B, B A, ...), so both sides meet the same phases. Each sample is one
`_one_latency()` of that side's own bench, on an otherwise idle pair of systems.

Reported: each side's p50 and p99, and the median of the paired differences (this - other, sample by sample).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Optional

from bench_pairs import on_path
from harness import percentile

HERE = Path(__file__).resolve().parent
# One side: its own bench's system() with the web, then one sample per line read ("start" or "chain"), its ms printed.
DRIVER = """
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import angora_bench as A
from harness import fresh_db, start_redis
try:
    from angora_rq.core.schema import Exec
    STARTED, ENDED = Exec.started, Exec.ended
except ImportError:  # before the record layout of issue 16
    STARTED, ENDED = "started", "ended"
SAMPLES = {"start": ("bench.true", "bench_true", STARTED), "chain": ("bench.chain", "chain_3", ENDED)}
work = Path(tempfile.mkdtemp(prefix="angora-latpairs-"))
server = start_redis(work / "redis")
try:
    with A.system(fresh_db(server, 1), work, web=True) as s:
        client = A.HttpClient(s["port"])
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() not in SAMPLES:
                break
            print(json.dumps(A._one_latency(client, s["r"], s["keys"], *SAMPLES[line.strip()])), flush=True)
        client.close()
finally:
    server.stop()
"""
WARMUP = 10  # samples of each kind per side, not counted (the web workers' first requests)
PAUSE = 0.01  # seconds between samples, as latency() waits


class Side:
    """One side's driver process: `sample(kind)` asks it for one measurement."""

    def __init__(self, name: str, python: str, bench: Path, env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen([python, "-c", DRIVER, str(bench)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(), env=env)
        if self._line() != "ready":
            raise RuntimeError(f"{name}: its system did not start")

    def sample(self, kind: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(kind + "\n")
        self.proc.stdin.flush()
        return float(json.loads(self._line()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(120)

    def _line(self) -> str:
        out: Optional[IO[str]] = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the driver exited ({self.proc.wait()})")
        return line.strip()


def run(other: Path, python: str, samples: int) -> dict[str, Any]:
    """Both systems up; `samples` samples of each kind per side after the warm-up, alternating sides."""
    this = Side("this", sys.executable, HERE, on_path(sys.executable, dict(os.environ)))
    # The other side must not import this checkout through a PYTHONPATH set for this one.
    other_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        that = Side("other", python, other / "bench", on_path(python, other_env))
    except BaseException:
        this.close()
        raise
    got: dict[str, dict[str, list[float]]] = {"this": {"start": [], "chain": []}, "other": {"start": [], "chain": []}}
    try:
        for i in range(WARMUP + samples):
            for kind in ("start", "chain"):
                order = (this, that) if i % 2 == 0 else (that, this)
                for side in order:
                    ms = side.sample(kind)
                    if i >= WARMUP:
                        got[side.name][kind].append(ms)
                    time.sleep(PAUSE)
    finally:
        this.close()
        that.close()
    return got


def summary(got: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Each side's p50 and p99 per kind, and the median of the paired differences (this - other)."""
    out: dict[str, Any] = {}
    for kind in ("start", "chain"):
        a, b = got["this"][kind], got["other"][kind]
        diffs = [x - y for x, y in zip(a, b)]
        out[kind] = {"this_p50_ms": percentile(a, 50), "other_p50_ms": percentile(b, 50),
                     "this_p99_ms": percentile(a, 99), "other_p99_ms": percentile(b, 99),
                     "paired_diff_median_ms": statistics.median(diffs),
                     "this_faster_share": sum(d < 0 for d in diffs) / len(diffs), "samples": len(a)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--against", required=True, type=Path, help="the other checkout (its bench/ is used)")
    ap.add_argument("--python", required=True, help="a Python that imports the other checkout's angora_rq")
    ap.add_argument("--samples", type=int, default=300, help="samples of each kind per side")
    ap.add_argument("--json", type=Path, help="also write the samples and the summary here")
    args = ap.parse_args()
    got = run(args.against.resolve(), args.python, args.samples)
    result = summary(got)
    print("| measure | this p50 | other p50 | this p99 | other p99 | paired difference, median | this faster |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, name in (("start", "/send -> start"), ("chain", "3-job chain")):
        r = result[kind]
        print(f"| {name} | {r['this_p50_ms']:.2f} ms | {r['other_p50_ms']:.2f} ms | {r['this_p99_ms']:.2f} ms | "
              f"{r['other_p99_ms']:.2f} ms | {r['paired_diff_median_ms']:+.2f} ms | {r['this_faster_share']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps({"summary": result, "samples": got, "against": str(args.against)}, indent=1))


if __name__ == "__main__":
    main()
