"""Simulated hosts on one machine, for the distributed-operation tests.

A `Host` is a process tree of Angora roles (matchers, workers, schedulers: `angora ROLE`, or through
tests/skewed.py when its clock is off) with its own identity (ANGORA_HOST, as executions record it), its own
folder (`logs/`: each role's output and the jobs' `log:` files, through $HOST_LOGS; `data/`: the workers'
spool) and its own TCP proxy to Redis (tests/chaos_proxy.py). The harness can

- kill it: SIGKILL to every process of the host at once (roles, guardians, commands: whatever carries the host's
  environment marker), as when a machine loses power;
- partition it (the proxy blackholes its traffic), and heal it;
- slow it (latency on every chunk) or stall it (traffic held, then delivered);
- skew its clock (set when the host is made: its roles run with time.time() shifted).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import redis

from angora_rq.core.keys import Keys
from angora_rq.store.queries import Queries
from angora_testkit import sigterm_all
from chaos_proxy import ChaosProxy

CLI = [sys.executable, "-m", "angora_rq.cli"]
SKEWED = [sys.executable, str(Path(__file__).with_name("skewed.py"))]
MARK = "ANGORA_TEST_HOST"  # every process of a host carries MARK=<harness id>:<host name> (commands inherit it)


def processes_marked(value: str) -> list[int]:
    """Pids of the processes whose environment holds MARK=value, and of their descendants (a worker's guardian
    starts with an environment of its own)."""
    needle = f"{MARK}={value}".encode()
    marked, parents = set(), {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    marked.add(pid)
            with open(f"/proc/{pid}/stat") as f:
                parents[pid] = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, grew = set(marked), True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


@dataclass
class Host:
    """One simulated host: its roles, its folder, its proxy to Redis."""

    name: str
    root: Path
    proxy: ChaosProxy
    env: dict[str, str]
    skew: float = 0.0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def mark(self) -> str:
        return self.env[MARK]

    @property
    def logs(self) -> Path:
        """The host's log folder: roles' output, and the jobs' `log:` files ($HOST_LOGS)."""
        return self.root / "logs"

    def start(self, role: str, *args: str, name: Optional[str] = None) -> subprocess.Popen:
        """Start `angora ROLE ARGS` on this host (named `name` in its log folder and, for roles, in Redis)."""
        name = name or f"{self.name}-{role}{len(self.procs) + 1}"
        argv = [*SKEWED, str(self.skew), role] if self.skew else [*CLI, role]
        if role in ("matcher", "worker", "scheduler"):
            args = ("--name", name, *args)
        out = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen([*argv, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        out.close()
        self.procs[name] = proc
        return proc

    def kill(self) -> int:
        """SIGKILL every process of this host at once; returns how many.

        Each is stopped first (SIGSTOP, until no new one appears), so none of them runs another instruction while
        the others die: a worker cannot record the end of a command killed a moment before it.
        """
        stopped: set[int] = set()
        while new := set(processes_marked(self.mark)) - stopped:
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            stopped |= new
        for pid in stopped:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (left := [p for p in processes_marked(self.mark) if _alive(p)]) and time.monotonic() < deadline:
            for pid in left:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.01)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.wait(10)
        return len(stopped)

    def partition(self) -> None:
        """Cut the host off from Redis: its traffic is dropped, its connections hang."""
        self.proxy.send("blackhole")

    def heal(self) -> None:
        """End a partition (connections that lost bytes are reset), a stall or a slowdown."""
        self.proxy.send("heal")
        self.proxy.send("pass")

    def slow(self, ms: float) -> None:
        """Add `ms` of latency to every chunk of the host's traffic, each way."""
        self.proxy.send(f"latency {ms:g}")

    def stall(self, seconds: float) -> None:
        """Hold the host's traffic for `seconds`, then deliver it."""
        self.proxy.send(f"stall {seconds:g}")

    def stop(self) -> None:
        """SIGTERM the roles, wait, then kill whatever of the host is left."""
        sigterm_all(self.procs.values())
        self.kill()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class Hosts:
    """The simulated hosts of one test, on one Redis database and key prefix."""

    def __init__(self, root: Path, redis_port: int, db: int, prefix: str, config: Path,
                 env: Optional[dict[str, str]] = None) -> None:
        self.root = root
        self.redis_port = redis_port
        self.db = db
        self.keys = Keys(prefix)
        self.config = config
        self.base_env = dict(os.environ, ANGORA_PREFIX=prefix, ANGORA_CONFIG=str(config), PYTHONUNBUFFERED="1",
                             **(env or {}))
        self.base_env.pop("ANGORA_AUTH_TOKEN", None)
        self.id = uuid.uuid4().hex[:8]
        self.hosts: dict[str, Host] = {}
        self.r = redis.Redis(port=redis_port, db=db)
        self.q = Queries(self.r, self.keys)

    def add(self, name: str, skew: float = 0.0, env: Optional[dict[str, str]] = None) -> Host:
        """A new host (no process yet) with its folder and its proxy."""
        root = self.root / name
        (root / "logs").mkdir(parents=True, exist_ok=True)
        proxy = ChaosProxy(self.redis_port, root / "logs" / "proxy.log")
        host_env = dict(self.base_env, REDIS_URL=proxy.url(self.db), ANGORA_HOST=name,
                        ANGORA_DATA_DIR=str(root / "data"), HOST_LOGS=str(root / "logs"),
                        **{MARK: f"{self.id}:{name}"}, **(env or {}))
        host = self.hosts[name] = Host(name, root, proxy, host_env, skew)
        return host

    def redis_now(self) -> float:
        """Redis' clock."""
        seconds, micros = self.r.time()
        return seconds + micros / 1e6

    def logs(self, limit: int = 1500) -> str:
        """The tail of every role's output, for assertion messages."""
        parts = []
        for host in self.hosts.values():
            for path in sorted(host.logs.glob("*.log")):
                parts.append(f"--- {host.name}/{path.name}\n{path.read_text(errors='replace')[-limit:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every host, then every proxy."""
        for host in self.hosts.values():
            if host.proxy.proc.poll() is None:
                host.heal()
        for host in self.hosts.values():
            host.stop()
        for host in self.hosts.values():
            host.proxy.close()
        self.r.close()
