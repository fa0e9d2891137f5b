"""Runner benchmark: `true` commands/s through angora_rq.commands.runner alone (start + pidfd poll, one process).

    python bench/bench_runner.py [--commands 2000] [--in-flight 8] [--json out.json]

No Redis, RQ or guardian: what the runner itself costs per command, beside run.py's spawn ceiling.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import tempfile
import time
from pathlib import Path
from typing import Any

from angora_rq.commands import runner
from angora_rq.commands.runner import CommandSpec


def commands_per_s(n: int, in_flight: int, spool_dir: str) -> dict[str, Any]:
    """Run n `true` commands, in_flight at a time, waiting on their pidfds; the rate and how many failed."""
    spec = CommandSpec(argv=["true"], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, spool_dir=spool_dir,
                       timeout=60)
    sel = selectors.DefaultSelector()
    outcomes: list[runner.Outcome] = []
    started, t0 = 0, time.perf_counter()
    while len(outcomes) < n:
        while started < n and len(sel.get_map()) < in_flight:
            cmd = runner.start(spec)
            sel.register(cmd.fileno(), selectors.EVENT_READ, cmd)
            started += 1
        for key, _ in sel.select(10):
            if (out := key.data.poll()) is not None:
                sel.unregister(key.fd)
                key.data.close()
                outcomes.append(out)
    rate = n / (time.perf_counter() - t0)
    return {"commands": n, "in_flight": in_flight, "commands_per_s": rate,
            "failed": sum(1 for o in outcomes if not o.ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--commands", type=int, default=2000)
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as spool:
        result = commands_per_s(args.commands, args.in_flight, spool)
    print(f"runner: {result['commands_per_s']:.0f} `true` commands/s "
          f"(start+poll, {args.in_flight} in flight, one process; {result['failed']} failed)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if result["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
