"""How soon the workers take a message sent just after a burst they drained.

    python bench/bench_after_burst.py                        # 40 bursts of 40 jobs (about 30 s)
    python bench/bench_after_burst.py --bursts 60 --burst 80 --json out.json
    python bench/bench_after_burst.py --long 2.5 --bursts 12   # one worker, one slot, a 2.5 s command each round

run.py's latency section times messages sent to an idle system. This times the message after a busy moment:
each round sends `--burst` trivial jobs through the Python API, waits until all have ended, sleeps `--gap`
seconds, then sends one more; reported are that message's times (ms, p50/p90/p99/max) from its send to its
dispatch (the matcher's `created`) and from its dispatch to its claim (the worker's `started`). A worker that
stays deaf to the queues' bells once it has drained shows in the second: up to a second (processes/waker.py).

With `--long S`, the system has one worker with one slot, and each round's "burst" is one command of S seconds:
the message after it times a worker that was full of a long command (longer than waker.DEAF_FOR) and has a free
slot again.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import angora_bench as A  # noqa: E402
from harness import fresh_db, machine, percentile, start_redis, wait_until  # noqa: E402

from angora_rq.core.messages import Message  # noqa: E402
from angora_rq.core.schema import Exec, Run  # noqa: E402
from angora_rq.store.bus import send  # noqa: E402


def after_bursts(url: str, bursts: int, burst: int, gap: float, log_dir: Path,
                 long: Optional[float] = None) -> dict[str, Any]:
    """`bursts` rounds on one system (a matcher, two workers): `burst` jobs, their end, `gap` s, one more job.
    `long`: one worker with one slot, and each round's burst is one command of `long` seconds."""
    to_dispatch: list[float] = []
    to_claim: list[float] = []
    size = (1, 1) if long else (2, None)
    with A.system(url, log_dir, workers=size[0], concurrency=size[1]) as s:
        r, keys = s["r"], s["keys"]
        for i in range(bursts):
            if long:
                send(r, keys, Message.create("bench.nap", {"SECONDS": str(long)}, None, origin="bench"))
                done = i
                wait_until(partial(_naps_above, r, keys, done), 120 + long, 0.002, "the long one")
            else:
                A._send_api(r, keys, burst)
                done = i * (burst + 1) + burst
                _ended(r, keys, done, "the burst")
            time.sleep(gap)
            t0 = time.time()
            msg = Message.create("bench.true", None, None, origin="bench")
            send(r, keys, msg)
            _ended(r, keys, done + 1, "the message after it")
            xid = r.hget(keys.run(msg.run_id), Run.job_execution + "bench_true").decode()
            created, started = (float(v) for v in r.hmget(keys.execution(xid), Exec.created, Exec.started))
            to_dispatch.append((created - t0) * 1000)
            to_claim.append((started - created) * 1000)
    out: dict[str, Any] = {"bursts": bursts, "burst": 1 if long else burst, "long_s": long, "gap_s": gap}
    for name, xs in (("send_to_dispatch", to_dispatch), ("dispatch_to_claim", to_claim)):
        for p in (50, 90, 99):
            out[f"{name}_p{p}_ms"] = percentile(xs, p)
        out[f"{name}_max_ms"] = max(xs)
    return out


def _naps_above(r: Any, keys: Any, n: int) -> bool:
    return A._succeeded(r, keys, "bench_nap") > n


def _ended(r: Any, keys: Any, n: int, what: str) -> None:
    """Wait until `n` trivial jobs have ended."""
    wait_until(lambda: A._succeeded(r, keys, "bench_true") >= n, 120, 0.002, what)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bursts", type=int, default=40)
    ap.add_argument("--burst", type=int, default=40, help="jobs per burst")
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between a burst's end and the next message")
    ap.add_argument("--long", type=float, default=None,
                    help="seconds: one worker, one slot, and each round's burst one command this long")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="angora-after-burst-"))
    server = start_redis(work / "redis")
    try:
        res = after_bursts(fresh_db(server, 1), args.bursts, args.burst, args.gap, work, args.long)
    finally:
        server.stop()
    res["machine"] = machine()
    for k, v in res.items():
        if k.endswith("_ms"):
            print(f"{k:28s} {v:9.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
