"""Angora's half of the benchmark: real `angora` processes (matcher, workers, the Procfile's web) on a private Redis.

Each function does ONE measurement and returns a JSON-able dict; bench/run.py repeats them and compares them
with the peers (bench/peers.py) measured in the same run.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import redis

from angora_rq.core import keys as K
from angora_rq.store.bus import send, send_in
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.schema import Exec, Run
from angora_rq.store.runindex import RunIndex
from angora_rq.processes.redis_server import free_port

from harness import (BENCH_DIR, Procs, bare_chain_ms, commands_total, cpu_seconds, percentile, redis_cpu_seconds,
                     rss_mib, tree_pss_mib, tree_rss_mib, wait_until)

CLI = [sys.executable, "-m", "angora_rq.cli"]
WARMUP = 50  # messages sent and finished before a measurement starts
JOBS_YAML = """\
- name: bench_true
  triggers: [bench.true]
  command: "true"
  replay: 0
- name: chain_1
  triggers: [bench.chain]
  command: "true"
  messages: [bench.chain.2]
  replay: 0
- name: chain_2
  triggers: [bench.chain.2]
  command: "true"
  messages: [bench.chain.3]
  replay: 0
- name: chain_3
  triggers: [bench.chain.3]
  command: "true"
  replay: 0
- name: bench_nap
  triggers: [bench.nap]
  command: [sh, -c, 'exec sleep "$ANGORA_PARAM_SECONDS"']
  params: {SECONDS: "1"}
  replay: 0
"""
APP = "angora_rq.web:create_app"
PROCFILE = BENCH_DIR.parent / "Procfile"


def web_server(port: int, app: str = APP) -> list[str]:
    """The Procfile's `web:` command as argv, on 127.0.0.1:`port`; for another app factory (the bare control), the
    same server with the line's --workers (angora_rq.web.server.granian_server, through bench/bare_app.py)."""
    line = next(x for x in PROCFILE.read_text().splitlines() if x.startswith("web:"))
    argv = shlex.split(line[len("web:"):].replace("$PORT", str(port)).replace("0.0.0.0", "127.0.0.1"))
    if argv[:2] != ["angora", "web"] or "--workers" not in argv:
        raise RuntimeError(f"expected `angora web ... --workers N` on the Procfile's web line: {line}")
    if app != APP:
        workers = argv[argv.index("--workers") + 1]
        return [sys.executable, str(BENCH_DIR / "bare_app.py"), app, str(port), workers]
    exe = shutil.which(argv[0], path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return [exe or argv[0], *argv[1:]]


def write_config(folder: Path, filler: int = 0) -> Path:
    """The benchmark's jobs, plus `filler` more jobs with exact and pattern triggers nothing sends."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.yml").write_text(JOBS_YAML)
    per_file = 10_000
    for f in range(0, filler, per_file):
        lines = []
        for i in range(f, min(filler, f + per_file)):
            trigger = f"filler.{i % 97}.*" if i % 20 == 0 else f"filler.job.{i}"
            lines.append(f"- name: filler_{i}\n  triggers: ['{trigger}']\n  command: echo {i}\n")
        (folder / f"filler_{f // per_file:03}.yml").write_text("".join(lines))
    return folder


def angora_env(url: str, config: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of Angora's processes for one measurement."""
    env = dict(os.environ, REDIS_URL=url, ANGORA_CONFIG=str(config), ANGORA_DATA_DIR=str(data_dir),
               ANGORA_PREFIX="angora", PYTHONUNBUFFERED="1", ANGORA_BACKLOG="10000000")
    env.pop("ANGORA_AUTH_TOKEN", None)
    env.update(extra)
    return env


@contextmanager
def system(url: str, log_dir: Path, workers: int = 2, concurrency: Optional[int] = None,
           web: bool = False, matcher: bool = True) -> Iterator[dict[str, Any]]:
    """Matcher, workers and (optionally) the Procfile's web server, started as a user would; idle when yielded."""
    work = Path(tempfile.mkdtemp(prefix="angora-bench-"))
    config = write_config(work / "config")
    env = angora_env(url, config, work / "data")
    r = redis.Redis.from_url(url)
    keys = Keys("angora")
    info: dict[str, Any] = {"r": r, "keys": keys, "pids": {}}
    with Procs(log_dir, env) as procs:
        if matcher:
            info["pids"]["matcher"] = procs.start("matcher", [*CLI, "matcher"]).pid
        for i in range(workers):
            args = ["-c", str(concurrency)] if concurrency else []
            info["pids"][f"worker{i}"] = procs.start(f"worker{i}", [*CLI, "worker", *args]).pid
        if web:
            port = free_port()
            info["port"] = port
            procs.start("web", web_server(port))
            wait_until(lambda: _port_open(port), 60, 0.05, "the web server to listen")
        wait_until(lambda: r.scard(keys.workers()) >= workers, 60, 0.05, "workers to register")
        if matcher:
            wait_until(lambda: _matcher_ready(r, keys), 60, 0.05, "the matcher to join its group")
        procs.check()
        yield info
        procs.check()


def _matcher_ready(r: redis.Redis, keys: Keys) -> bool:
    try:
        return any(int(g["consumers"]) > 0 for g in r.xinfo_groups(keys.stream()))
    except redis.ResponseError:
        return False


def _fill_stream(r: redis.Redis, keys: Keys, n: int) -> None:
    """Put n `bench.true` messages on the stream as internal messages are sent, on pipelines of 1,000."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        send_in(pipe, keys, Message.create("bench.true", None, None, origin="bench"))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _pending(r: redis.Redis, keys: Keys) -> int:
    return int(r.xpending(keys.stream(), K.MATCHER_GROUP)["pending"])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class HttpClient:
    """A minimal HTTP/1.1 keep-alive client: cheap enough on CPU that it does not hide the server's cost."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post_form(self, path: str, body: str) -> tuple[int, bytes]:
        """POST an urlencoded body; return (status, body)."""
        data = body.encode()
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded"
                          b"\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))
        return self._response()

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _counts(r: redis.Redis, keys: Keys, job: str) -> dict[str, Any]:
    """A job's counters as the API reads them (commands that ended, per final status and duration bucket)."""
    from angora_rq.store.queries import Queries

    return Queries(r, keys).job_stats([job])[job]


def _succeeded(r: redis.Redis, keys: Keys, job: str) -> int:
    return int(_counts(r, keys, job)["succeeded"])


def _on_connections(port: int, clients: int, work: Callable[[HttpClient, int], None]) -> None:
    """Run work(client, i) in `clients` threads, each on its own keep-alive connection; re-raise the first error."""
    errors: list[BaseException] = []

    def one(i: int) -> None:
        c = HttpClient(port)
        try:
            work(c, i)
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _post_send(c: HttpClient, topic: str = "bench.true") -> None:
    status, body = c.post_form("/send", f"msg={topic}")
    if status != 202:
        raise RuntimeError(f"/send answered {status}: {body[:200]!r}")


def _send_http(port: int, n: int, clients: int = 4, topic: str = "bench.true") -> None:
    """n POST /send msg=`topic` over `clients` keep-alive connections."""
    def work(c: HttpClient, i: int) -> None:
        for _ in range(n // clients + (i < n % clients)):
            _post_send(c, topic)

    _on_connections(port, clients, work)


CHAIN = ("bench.chain", ("chain_1", "chain_2", "chain_3"))  # a 3-job workflow: its topic and its jobs


def throughput(url: str, n: int, log_dir: Path, via: str = "http", workers: int = 2,
               concurrency: Optional[int] = None, clients: int = 4, chains: bool = False,
               window: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """n trivial jobs (`true`) sent through /send (via='http', over `clients` connections) or the Python API
    (via='api'), until all finished. chains: n messages that each start a 3-job workflow (CHAIN) instead; the
    figures are per job all the same (3 n jobs). window: called with "start" and "end" around the timed window
    (bench_cpu_share.py reads every process's CPU there)."""
    topic, jobs = CHAIN if chains else ("bench.true", ("bench_true",))
    with system(url, log_dir, workers=workers, concurrency=concurrency, web=(via == "http")) as s:
        r, keys = s["r"], s["keys"]
        send_n = ((lambda k: _send_http(s["port"], k, clients, topic)) if via == "http"
                  else (lambda k: _send_api(r, keys, k, topic)))
        # Warm up the path first (the web server's workers, each process's connections and scripts).
        send_n(WARMUP)
        wait_until(lambda: _succeeded(r, keys, jobs[-1]) >= WARMUP, 60, 0.01, "warm-up jobs")
        RunIndex(r, keys).settle()  # the warm-up's runs, before the window
        polls = [0]

        def done() -> bool:
            polls[0] += 1
            return _succeeded(r, keys, jobs[-1]) >= WARMUP + n

        if window is not None:
            window("start")
        c0, rcpu0 = commands_total(r), redis_cpu_seconds(r)
        t0 = time.perf_counter()
        sender = threading.Thread(target=send_n, args=(n,))
        sender.start()
        t_end = wait_until(done, max(60.0, n / 20), 0.005, f"{n} jobs to finish")
        if window is not None:
            window("end")
        sender.join()
        # Work each run leaves for later is counted too: a janitor puts every finished run into the run indexes
        # within seconds (processes/janitor.py, SETTLE_EVERY), mostly after this window. Settled here at once
        # (what a janitor settled meanwhile is in the window already). Each job here is a run of its own.
        c_settle, rcpu_settle = commands_total(r), redis_cpu_seconds(r)
        RunIndex(r, keys).settle()
        settle_cmds = commands_total(r) - c_settle
        settle_cpu = redis_cpu_seconds(r) - rcpu_settle
        cmds = commands_total(r) - c0 - polls[0] - 1
        redis_cpu = redis_cpu_seconds(r) - rcpu0  # the polls' reads included: a few us each
        failed = sum(int(_counts(r, keys, job)["failed"]) for job in jobs)
    seconds, done_jobs = t_end - t0, n * len(jobs)
    return {"jobs": done_jobs, "seconds": seconds, "jobs_per_s": done_jobs / seconds,
            "redis_cmds_per_job": cmds / done_jobs, "redis_cpu_us_per_job": redis_cpu / done_jobs * 1e6,
            "settle_cmds_per_job": settle_cmds / done_jobs, "settle_cpu_us_per_job": settle_cpu / done_jobs * 1e6,
            "failed": failed, "workers": workers, "via": via, "clients": clients if via == "http" else 0,
            "jobs_per_message": len(jobs)}


def _send_api(r: redis.Redis, keys: Keys, n: int, topic: str = "bench.true") -> None:
    """n messages through the Python API (angora_rq.store.bus.send), one call each, from this one process."""
    for _ in range(n):
        send(r, keys, Message.create(topic, None, None, origin="bench"))


def dispatch(url: str, n: int, definitions: int, log_dir: Path) -> dict[str, Any]:
    """Messages/s through an `angora matcher` process into queued RQ jobs, with `definitions` jobs loaded.

    The matcher runs as users run it, in its own process, not inside this long-lived benchmark process (there, with
    100,000 definitions, it measured 0.68-0.71x in full runs and 0.90-1.04x alone; the full runs' extra gap was not
    explained).
    """
    work = Path(tempfile.mkdtemp(prefix="angora-bench-"))
    filler = max(0, definitions - 4)
    env = angora_env(url, write_config(work / "config", filler=filler), work / "data")
    r = redis.Redis.from_url(url)
    keys = Keys("angora")
    with Procs(log_dir, env) as procs:
        matcher = procs.start("matcher", [*CLI, "matcher"])
        wait_until(lambda: _matcher_ready(r, keys), 600, 0.05, "the matcher to load the definitions and join")
        procs.check()
        polls = [0]

        def queued() -> bool:
            polls[0] += 1
            return r.llen(keys.rq_queue("default")) >= n

        cpu0, c0, t0 = cpu_seconds(matcher.pid), commands_total(r), time.perf_counter()
        _fill_stream(r, keys, n)
        t_end = wait_until(queued, max(60.0, n / 100), 0.002, f"{n} jobs to be queued")
        cpu = cpu_seconds(matcher.pid) - cpu0
        cmds = commands_total(r) - c0 - polls[0] - 1 - 3 * n  # less the polls and the messages' own XADD, HINCRBY, INCR
        wait_until(lambda: _pending(r, keys) == 0, 60, 0.01, "every message to be acknowledged")
        queued = r.llen(keys.rq_queue("default"))
        if queued != n:
            raise RuntimeError(f"the matcher queued {queued} jobs for {n} messages")
        procs.check()
    seconds = t_end - t0
    return {"messages": n, "seconds": seconds, "messages_per_s": n / seconds, "definitions": filler + 4,
            "matcher_cpu_us_per_message": cpu / n * 1e6, "redis_cmds_per_message": cmds / n}


def latency(url: str, reps: int, log_dir: Path) -> dict[str, Any]:
    """On an idle system: /send -> command start, and /send -> end of a 3-job chain; p50/p99 in ms."""
    with system(url, log_dir, web=True) as s:
        r, keys = s["r"], s["keys"]
        client = HttpClient(s["port"])
        start_ms: list[float] = []
        chain_ms: list[float] = []
        bare_ms: list[float] = []  # the same gaps, the same moments: 3 bare `true` one after another
        try:
            for i in range(reps + 10):  # the first 10 warm up the web workers and are not counted
                if i == 10:
                    start_ms.clear()
                    chain_ms.clear()
                    bare_ms.clear()
                start_ms.append(_one_latency(client, r, keys, "bench.true", "bench_true", Exec.started))
                time.sleep(0.01)
                chain_ms.append(_one_latency(client, r, keys, "bench.chain", "chain_3", Exec.ended))
                time.sleep(0.01)
                bare_ms.append(bare_chain_ms(3))
                time.sleep(0.01)
        finally:
            client.close()
    return {"send_to_start_p50_ms": percentile(start_ms, 50), "send_to_start_p99_ms": percentile(start_ms, 99),
            "chain3_p50_ms": percentile(chain_ms, 50), "chain3_p99_ms": percentile(chain_ms, 99),
            "bare3_p50_ms": percentile(bare_ms, 50), "bare3_p99_ms": percentile(bare_ms, 99), "samples": reps}


def _one_latency(client: HttpClient, r: redis.Redis, keys: Keys, topic: str, job: str, field: str) -> float:
    """Send one message; wait until `job` has finished in its run; ms from just before the POST to its `field`."""
    t0 = time.time()
    status, body = client.post_form("/send", f"msg={topic}")
    if status != 202:
        raise RuntimeError(f"/send answered {status}: {body[:200]!r}")
    run_id = json.loads(body)["run_id"]
    run_key = keys.run(run_id)
    xid = wait_until(lambda: r.hget(run_key, Run.job_execution + job), 30, 0.0005, f"{job} to be dispatched")
    xid = r.hget(run_key, Run.job_execution + job).decode()
    wait_until(lambda: r.hget(keys.execution(xid), Exec.ended), 30, 0.0005, f"{job} to finish")
    return (float(r.hget(keys.execution(xid), field)) - t0) * 1000


def send_rps(url: str, log_dir: Path, seconds: float = 5.0, clients: int = 8) -> dict[str, Any]:
    """Requests/s of POST /send (matcher stopped: the web side alone) vs a bare Flask route, same server and flags."""
    work = Path(tempfile.mkdtemp(prefix="angora-bench-"))
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p)
    env = angora_env(url, write_config(work / "config"), work / "data", PYTHONPATH=path)
    out = {}
    for name, app in (("angora_send", APP), ("bare_flask", "bare_app:create_app")):
        port = free_port()
        with Procs(log_dir, env) as procs:
            procs.start(f"web-{name}", web_server(port, app))
            wait_until(partial(_port_open, port), 60, 0.05, "the web server to listen")
            _hammer(port, 0.5, clients)  # warm up both web workers
            out[name] = _hammer(port, seconds, clients)
    out["ratio"] = out["angora_send"] / out["bare_flask"]
    return out


def _hammer(port: int, seconds: float, clients: int) -> float:
    """POST /send from `clients` keep-alive connections for `seconds`; requests/s answered 202."""
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def work(c: HttpClient, i: int) -> None:
        while time.perf_counter() < stop:
            _post_send(c)
            counts[i] += 1

    t0 = time.perf_counter()
    _on_connections(port, clients, work)
    return sum(counts) / (time.perf_counter() - t0)


def memory(url: str, log_dir: Path, n: int = 2000) -> dict[str, Any]:
    """Idle worker RSS (alone, and with its guardian process) after n jobs; Redis bytes per retained execution
    and per queued message."""
    r = redis.Redis.from_url(url)
    keys = Keys("angora")
    with system(url, log_dir, workers=1) as s:
        # What one more execution costs, not what the first ones set up once (scripts, definitions, statistics).
        _send_api(r, keys, WARMUP)
        wait_until(lambda: _succeeded(r, keys, "bench_true") >= WARMUP, 60, 0.01, "warm-up jobs to finish")
        RunIndex(r, keys).settle()
        before = _used_memory(r)
        _send_api(r, keys, n)
        wait_until(lambda: _succeeded(r, keys, "bench_true") >= WARMUP + n, max(60.0, n / 20), 0.01,
                   "jobs to finish")
        time.sleep(3)  # let the worker settle (heartbeats, live tails) before reading its size
        pid = s["pids"]["worker0"]
        worker_mib, worker_tree_mib, worker_tree_pss = rss_mib(pid), tree_rss_mib(pid), tree_pss_mib(pid)
        RunIndex(r, keys).settle()  # every run in its run indexes, as the janitor has it within seconds
        per_exec = (_used_memory(r) - before) / n
    before = _used_memory(r)
    _fill_stream(r, keys, n)
    per_msg = (_used_memory(r) - before) / n
    return {"idle_worker_rss_mib": worker_mib, "idle_worker_with_guardian_rss_mib": worker_tree_mib,
            "idle_worker_with_guardian_pss_mib": worker_tree_pss, "redis_bytes_per_execution": per_exec,
            "redis_bytes_per_queued_message": per_msg, "jobs": n}


def _used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])
