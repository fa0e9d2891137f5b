"""What open live pages cost the server: N browsers' worth of polling against the Procfile's web server.

Fills a private Redis as bench_pages.py does (100,000 executions, 150 jobs, 2,000 runs), starts the Procfile's web
line (granian, 2 workers), then N threads each poll one live page the way angora.js does (If-None-Match with the
last ETag, `X-Angora-Live`, every --interval seconds: the fast interval, used while something on the page moves)
for --seconds. Reports requests/s, the share answered 304, and the CPU the web server and Redis used.

    python bench/bench_live.py [--pages 50] [--interval 2] [--seconds 30] [--executions 100000]
"""
from __future__ import annotations

import argparse
import http.cookiejar
import json
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from angora_bench import web_server
from angora_rq.core.keys import Keys
from angora_rq.processes.redis_server import free_port
from angora_rq.store.runindex import RunIndex
from bench_pages import HOT, JOBS, RUNS, definitions, fill_executions, fill_runs, fill_stats
from harness import Procs, cpu_seconds, descendants, start_redis, wait_until


@dataclass
class Tally:
    """What the pollers got back: answers by status, and the first body of each error status."""

    counts: dict[str, int] = field(default_factory=dict)
    first_errors: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, error: str = "") -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if error:
                self.first_errors.setdefault(key, error)


def poll(url: str, stop: threading.Event, interval: float, tally: Tally) -> None:
    """One open page: poll `url` with the last ETag until told to stop (its cookie kept, as a browser does: the
    page carries the session's CSRF token, so a new session each time would be a new page each time)."""
    etag = ""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    while not stop.is_set():
        req = urllib.request.Request(url, headers={"X-Angora-Live": "1", "Accept": "text/html",
                                                   **({"If-None-Match": etag} if etag else {})})
        try:
            with opener.open(req, timeout=10) as resp:
                resp.read()
                etag = resp.headers.get("ETag") or ""
                tally.add("200")
        except urllib.error.HTTPError as e:
            tally.add(str(e.code), "" if e.code == 304 else f"{url}: {e.read()[:300]!r}")
        except OSError as e:
            tally.add("error", f"{url}: {e}")
        stop.wait(interval)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants so far (those still alive)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--executions", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "live.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="angora-bench-live-") as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        names = definitions(root / "config", JOBS)
        server = start_redis(root / "redis", appendonly=False)
        try:
            keys = Keys("bench")
            url = f"{server.url}/0"
            r = redis.Redis.from_url(url)
            runs = [f"bench-run-{k:05d}" for k in range(RUNS)]
            ids = fill_executions(r, keys, args.executions, runs)
            fill_runs(r, keys, names, runs, ids[-1])
            fill_stats(r, keys, names, ids[-1], runs, args.executions)
            RunIndex(r, keys).settle()
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = {"REDIS_URL": url, "ANGORA_CONFIG": str(root / "config"), "ANGORA_PREFIX": keys.prefix,
                   "ANGORA_DATA_DIR": str(root / "data"), "ANGORA_HISTORY": str(args.executions + 1)}
            with Procs(root / "logs") as procs:
                web = procs.start("web", web_server(port), env=env)
                wait_until(lambda: _answers(base + "/healthz"), 60, what="the web server")
                pages = ["/", "/runs", f"/runs/{runs[1]}", f"/executions/{ids[-1]}", f"/jobs/{HOT}", "/schedules",
                         "/runs?status=failed"]
                result = measure(base, pages, web.pid, r, args)
        finally:
            server.stop()
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


def measure(base: str, pages: list[str], web_pid: int, r: redis.Redis, args: Any) -> dict[str, Any]:
    """Run the pollers for args.seconds; CPU of the web server and Redis over that window."""
    stop, tally = threading.Event(), Tally()
    threads = [threading.Thread(target=poll, args=(base + pages[i % len(pages)], stop, args.interval, tally),
                                daemon=True) for i in range(args.pages)]
    for t in threads:  # spread over one interval, as pages opened at different moments
        t.start()
        time.sleep(args.interval / args.pages)
    web0, redis0, t0 = tree_cpu(web_pid), redis_cpu(r), time.monotonic()
    with tally.lock:
        tally.counts.clear()
    stop.wait(args.seconds)
    web1, redis1, elapsed = tree_cpu(web_pid), redis_cpu(r), time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(15)
    total = sum(tally.counts.values())
    return {"pages": args.pages, "interval_s": args.interval, "seconds": elapsed, "requests": total,
            "requests_per_s": total / elapsed, "answers": tally.counts, "first_errors": tally.first_errors,
            "share_304": tally.counts.get("304", 0) / total if total else 0.0,
            "web_cpu_percent_of_a_core": 100 * (web1 - web0) / elapsed,
            "redis_cpu_percent_of_a_core": 100 * (redis1 - redis0) / elapsed,
            "web_cpu_ms_per_request": 1000 * (web1 - web0) / total if total else 0.0,
            "executions": args.executions}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def report(res: dict[str, Any]) -> None:
    print(f"{res['pages']} open live pages polling every {res['interval_s']:g} s for {res['seconds']:.0f} s "
          f"({res['executions']:,} executions in Redis)")
    print(f"  {res['requests_per_s']:.1f} requests/s, {100 * res['share_304']:.0f} % answered 304 "
          f"(answers: {res['answers']})")
    for status, body in res["first_errors"].items():
        print(f"  first {status}: {body}")
    print(f"  web server: {res['web_cpu_percent_of_a_core']:.1f} % of one core "
          f"({res['web_cpu_ms_per_request']:.1f} ms of CPU per poll); "
          f"Redis: {res['redis_cpu_percent_of_a_core']:.1f} % of one core")


if __name__ == "__main__":
    sys.exit(main())
