"""What a second failover keeps when it promotes a primary that was just restarted as a replica.

    python bench/bench_failover_window.py --trials 5 --json out.json    # about 20 s a trial

A primary, one replica and three sentinels (tests/sentinel_cluster.py: down after 1 s, quorum 2). 2,000 keys are
written and confirmed by `WAIT 1`; the primary is SIGKILLed, the sentinels promote the replica, the old primary is
restarted as its replica, and `--after` seconds later the new primary is stopped (SIGSTOP) for 3 s: the sentinels
promote the old node. Reported per `repl-diskless-sync-delay` (Redis 7's default 5 s, and 0): in how many trials the
promoted node held all 2,000 keys, and the keys each held (-1: no second failover came within 20 s, as a
sentinel waits twice the failover timeout before it tries again). Redis 6.2 syncs through a snapshot on disk and ignores
the delay. Pick the server with ANGORA_REDIS_SERVER.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The cluster is the failover tests' own (tests/ is not a package: its folder goes on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import redis  # noqa: E402

from angora_rq.processes.redis_server import find_redis_server  # noqa: E402
from sentinel_cluster import SentinelCluster  # noqa: E402

KEYS = 2000
STALL = 3.0  # seconds: three times the sentinels' down-after


def trial(delay: int, after: float) -> int:
    """Keys the node promoted by the second failover holds (-1: the sentinels promoted no other node)."""
    with tempfile.TemporaryDirectory() as root:
        args = ("--repl-diskless-sync-delay", str(delay), "--loglevel", "notice")
        with SentinelCluster(Path(root), node_args=args) as cluster:
            first = redis.Redis(port=cluster.primary_port())
            with first.pipeline(transaction=False) as p:
                for i in range(KEYS):
                    p.set(f"k{i}", i)
                p.execute()
            assert first.wait(1, 5000) == 1
            old = cluster.kill_primary()
            new = cluster.wait_failover(old)
            cluster.restart_as_replica(old, new)
            time.sleep(after)
            stalled = cluster.node(new).proc
            assert stalled is not None
            os.kill(stalled.pid, signal.SIGSTOP)
            time.sleep(STALL)
            os.kill(stalled.pid, signal.SIGCONT)
            try:
                promoted = cluster.wait_failover(new, timeout=20)
            except RuntimeError:
                return -1
            return int(redis.Redis(port=promoted).dbsize())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--after", type=float, default=0.0, help="seconds from the restart to the stall")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    server = find_redis_server()
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout.split()[2]
    out: dict[str, Any] = {"server": version, "keys": KEYS, "after_s": a.after, "stall_s": STALL, "delays": {}}
    for delay in (5, 0):
        kept = [trial(delay, a.after) for _ in range(a.trials)]
        flipped = [k for k in kept if k >= 0]
        out["delays"][str(delay)] = {"kept": kept, "second_failovers": len(flipped),
                                     "whole": sum(k == KEYS for k in flipped)}
        print(f"{version}, repl-diskless-sync-delay {delay}: all {KEYS} keys kept in {sum(k == KEYS for k in flipped)} "
              f"of {len(flipped)} second failovers ({a.trials - len(flipped)} trials had none); keys held: {kept}",
              flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
