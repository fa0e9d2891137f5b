"""Run Angora's processes together (`angora up`): prefixed output, restarts with backoff, Redis stopped last."""
from __future__ import annotations

import os
import select
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, TextIO

from angora_rq.commands.signals import group_members, signal_group
from angora_rq.core.errors import AngoraError
from angora_rq.processes.redis_server import RedisServer, die_with_parent

# ANSI foreground colours, one per process, in start order (honcho's palette order).
COLOURS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)
SYSTEM = "angora"  # the prefix of the supervisor's own lines
MAX_LINE = 64 * 1024  # a child that never prints a newline still gets relayed in chunks


class SupervisorError(AngoraError):
    """Raised when a process keeps failing as it starts, so the system cannot come up."""


@dataclass(frozen=True)
class ProcSpec:
    """One process to run and keep running: `env` is laid over the supervisor's environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None


@dataclass(frozen=True)
class Policy:
    """When to give up on a stop or a crashing process, and how long to wait between restarts."""

    grace: float = 10.0  # SIGTERM, then SIGKILL after this many seconds
    backoff: float = 1.0  # first restart delay; doubles with each quick exit in a row
    max_backoff: float = 30.0
    fast_exit: float = 5.0  # an exit this soon after a start counts as a failure to start
    max_fast_exits: int = 3  # that many in a row, before ever running longer: stop everything


@dataclass
class _Child:
    """Run-time state of one supervised process."""

    spec: ProcSpec
    colour: int
    proc: Optional[subprocess.Popen] = None
    started: float = 0.0
    buf: bytes = b""
    quick_exits: int = 0
    ever_stable: bool = False
    restart_at: Optional[float] = None
    restarts: int = 0
    last_lines: deque = field(default_factory=lambda: deque(maxlen=10))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def describe_exit(code: int) -> str:
    """'exited with status 1' or 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Starts Redis then the processes, relays their output with a prefix, restarts the ones that die."""

    def __init__(self, procs: Sequence[ProcSpec], redis: Optional[RedisServer] = None, *,
                 out: Optional[TextIO] = None, colour: Optional[bool] = None, policy: Policy = Policy()) -> None:
        self.children = [_Child(spec, COLOURS[i % len(COLOURS)]) for i, spec in enumerate(procs)]
        self.redis = redis
        self.out = out if out is not None else sys.stdout
        self.colour = self.out.isatty() if colour is None else colour
        self.policy = policy
        self.width = max([len(SYSTEM), len("redis"), *(len(p.name) for p in procs)])
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self._stop_requests = 0
        self._stopped = False
        self._muted = False

    # -- output -------------------------------------------------------------------------------------------
    def emit(self, name: str, line: str, colour: int = 0) -> None:
        """Write one line as `name | line`, coloured when enabled."""
        prefix = f"{name:<{self.width}} |"
        if self.colour:
            prefix = f"\x1b[{colour or 1}m{prefix}\x1b[0m"
        if self._muted:
            return
        try:
            self.out.write(f"{prefix} {line}\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            # `angora up | head` closed the pipe: keep supervising (and stop cleanly) without output.
            self._muted = True

    def say(self, line: str) -> None:
        """A line from the supervisor itself."""
        self.emit(SYSTEM, line)

    def _relay(self, timeout: float) -> None:
        """Wait up to `timeout` for output and relay every complete line that arrived."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            self._read(key.data)

    def _read(self, child: _Child) -> bool:
        """Read what one child's pipe holds; False at end of file (the pipe is then closed)."""
        assert child.proc is not None and child.proc.stdout is not None
        pipe = child.proc.stdout
        data = os.read(pipe.fileno(), 65536)
        if not data:
            self.selector.unregister(pipe)
            pipe.close()
            self._lines(child, final=True)
            return False
        child.buf += data
        self._lines(child, final=False)
        return True

    def _lines(self, child: _Child, final: bool) -> None:
        *lines, child.buf = child.buf.split(b"\n")
        if final or len(child.buf) > MAX_LINE:
            lines.append(child.buf)
            child.buf = b""
        for raw in lines:
            if final and not raw:
                continue
            line = raw.decode("utf-8", "replace").rstrip("\r")
            child.last_lines.append(line)
            self.emit(child.spec.name, line, child.colour)

    def _drain(self, child: _Child) -> None:
        """Relay what is left in an exited child's pipe without blocking (a grandchild may hold it open)."""
        pipe = child.proc.stdout if child.proc is not None else None
        if pipe is None or pipe.closed:
            return
        while select.select([pipe], [], [], 0)[0] and self._read(child):
            pass
        if not pipe.closed:
            self.selector.unregister(pipe)
            pipe.close()
            self._lines(child, final=True)

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start Redis (when there is one and it is not running), then every process."""
        if self.redis is not None and self.redis.pid is None:
            self.redis.start()
            self.say(f"redis started (pid {self.redis.pid}) at {self.redis.url}, data in {self.redis.data_dir}")
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        child.proc = subprocess.Popen(
            list(spec.argv), env={**os.environ, **spec.env}, cwd=spec.cwd,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C in the terminal reaches only us, and we decide the order of the stop.
            start_new_session=True, preexec_fn=die_with_parent(),
        )
        child.started, child.restart_at, child.buf = time.monotonic(), None, b""
        assert child.proc.stdout is not None
        self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)
        self.say(f"{spec.name} started (pid {child.proc.pid})")

    def step(self, timeout: float = 0.2) -> None:
        """One iteration: relay output, notice exits, restart what is due; raises SupervisorError to give up."""
        self._relay(timeout)
        if self.stopping:
            return
        self._check_redis()
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._on_exit(child, now)
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def _on_exit(self, child: _Child, now: float) -> None:
        """Log an unexpected exit and schedule a restart, or give up when it keeps failing at startup."""
        assert child.proc is not None
        self._drain(child)
        code, uptime = child.proc.wait(), now - child.started
        self._kill_leftovers(child)
        child.proc = None
        if uptime < self.policy.fast_exit:
            child.quick_exits += 1
        else:
            child.quick_exits, child.ever_stable = 0, True
        what = f"{child.spec.name} {describe_exit(code)} after {uptime:.1f}s"
        if not child.ever_stable and child.quick_exits >= self.policy.max_fast_exits:
            self.say(f"{what}: giving up")
            last = "\n".join(f"  {line}" for line in child.last_lines) or "  (no output)"
            raise SupervisorError(f"{child.spec.name} failed to start: {child.quick_exits} times in a row it ended "
                                  f"within {self.policy.fast_exit:g}s (last time it {describe_exit(code)}); "
                                  f"its last output:\n{last}")
        delay = min(self.policy.backoff * 2 ** max(child.quick_exits - 1, 0), self.policy.max_backoff)
        child.restart_at = now + delay
        self.say(f"{what}; restarting in {delay:g}s")

    def _check_redis(self) -> None:
        """Restart the embedded Redis if it died (AOF brings the data back); raise if it cannot start."""
        redis = self.redis
        if redis is None or redis.proc is None or redis.proc.poll() is None:
            return
        self.say(f"redis {describe_exit(redis.proc.returncode)}; restarting it (see {redis.log_path})")
        redis.start()
        self.say(f"redis restarted (pid {redis.pid})")

    def _kill_leftovers(self, child: _Child) -> None:
        """SIGKILL what is left in an exited child's process group (its leader is gone: nobody stops them)."""
        assert child.proc is not None
        left = group_members(child.proc.pid)
        if left:
            self.say(f"{child.spec.name} left processes in its group ({', '.join(map(str, left))}): SIGKILL")
            signal_group(child.proc.pid, signal.SIGKILL)

    def request_stop(self, *_: object) -> None:
        """Ask run() to stop (safe in a signal handler); a second request skips the grace period."""
        self.stopping = True
        self._stop_requests += 1

    def run(self) -> None:
        """Start, then step until a stop is requested; always stop everything on the way out."""
        try:
            self.start()
            while not self.stopping:
                self.step()
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL after the grace period, then stop Redis: last, when all are gone."""
        self.stopping = True
        if self._stopped:
            return
        self._stopped = True
        running = [c for c in self.children if c.alive]
        for child in running:
            assert child.proc is not None
            self.say(f"stopping {child.spec.name} (pid {child.proc.pid})")
            signal_group(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.policy.grace
        while any(c.alive for c in running) and time.monotonic() < deadline and self._stop_requests < 2:
            self._relay(0.05)
        for child in self.children:
            if child.proc is not None:
                self._finish(child)
        if self.redis is not None and self.redis.proc is not None:
            self.say(f"stopping redis (pid {self.redis.proc.pid})")
            self.redis.stop()
            self.say("redis stopped")
        self.selector.close()

    def _finish(self, child: _Child) -> None:
        """SIGKILL a child that outlived the grace period, reap it, relay its last output."""
        assert child.proc is not None
        if child.alive:
            self.say(f"{child.spec.name} did not stop within {self.policy.grace:g}s: SIGKILL")
            signal_group(child.proc.pid, signal.SIGKILL)
        code = child.proc.wait()
        self._drain(child)
        self._kill_leftovers(child)
        self.say(f"{child.spec.name} {describe_exit(code)}")
        child.proc = None

    def pids(self) -> dict[str, int]:
        """Pid of each running process by name (Redis included)."""
        found = {c.spec.name: c.proc.pid for c in self.children if c.alive and c.proc is not None}
        if self.redis is not None and self.redis.pid is not None:
            found["redis"] = self.redis.pid
        return found
