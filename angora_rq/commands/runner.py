"""Run one command: argv and environment from a job, output and its log, timeout and kill of all its processes.

Non-blocking by design: a worker starts many commands, waits on their `fileno()` (pidfds) with one selector,
and calls `poll(now)` when one is readable or when `next_deadline()` has passed. No threads, no shell, no
wrapper process: one `Popen` per command.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from angora_rq.core.command import TAIL_LIMIT, CommandSpec
from angora_rq.core.outputs import MAX_OUTPUT
from angora_rq.commands.reaper import EXECUTION_VAR, signal_escaped
from angora_rq.commands.signals import signal_group
from angora_rq.commands import spoolfiles
from angora_rq.commands.spawn import Spawned, posix_spawn

log = logging.getLogger(__name__)

_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20
_devnull = -1


# -- results -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """How a command ended: reason is 'exit', 'timeout', 'killed' or 'spawn_error'; tail is its last output;
    output what it wrote to $ANGORA_OUTPUT (at most MAX_OUTPUT + 1 bytes, so too much shows)."""

    exit_code: Optional[int]
    signal: Optional[int]
    reason: str
    started: float
    ended: float
    duration: float
    tail: str
    output: bytes = b""

    @property
    def ok(self) -> bool:
        """True when the command exited 0 by itself."""
        return self.exit_code == 0 and self.reason == "exit"

    def status(self) -> str:
        """'0', '42' or 'signal SIGTERM'."""
        return _status(self.exit_code, self.signal)


# -- a running command -----------------------------------------------------------------------------------
class RunningCommand:
    """A started command (or one that could not start): poll it, kill it, read its output.

    Times are wall-clock (`time.time()`), like the `now` a worker loop passes in. When the leader exits,
    whatever is left of its process group is SIGKILLed: a job's processes must not outlive it. A timeout or a
    kill signals the processes of its tree that left the group too; those that outlive their parent are the
    worker's to end (reaper.py).

    Output goes to an unnamed spool file of this execution alone (spoolfiles.py: reused only once nothing can
    write to it), so its tail is its own even when executions share a log; the log gets the whole output as one
    block between marker lines when the command ends.
    """

    def __init__(self, spec: CommandSpec, started: float, out_fd: int, log_fd: int = -1, writer: int = -1) -> None:
        self.spec = spec
        self.started = started
        self.pid: Optional[int] = None
        self.pgid: Optional[int] = None  # == pid: every command leads its own session and group
        self._t0 = time.monotonic()
        self._out = out_fd  # this execution's spool file, read here; -1 when it could not be opened
        self._writer = writer  # the command's own descriptor of it (-1: the command writes through _out)
        self._reusable = writer >= 0  # the spool file may serve a later command (spoolfiles.give_back)
        self._log = log_fd  # the job's log, opened at start (so an unwritable one fails the start), or -1
        self._popen: Optional[subprocess.Popen[bytes] | Spawned] = None
        self._pidfd = -1
        self._deadline = started + spec.timeout if spec.timeout and spec.timeout > 0 else None
        self._reason = "exit"
        self._kill_at: Optional[float] = None  # end of the grace after SIGTERM
        self._outcome: Optional[Outcome] = None
        self._reported = False

    def fileno(self) -> int:
        """A pidfd, readable once the leader has exited; ValueError if there is no process to wait on."""
        if self._pidfd < 0:
            raise ValueError("no process to wait on")
        return self._pidfd

    def next_deadline(self) -> Optional[float]:
        """When poll() must run again even if fileno() stays quiet (timeout, end of grace), or None."""
        if self._outcome is not None:
            return None if self._reported else self._outcome.ended  # e.g. a spawn error: report it now
        if self._pidfd < 0:
            return time.time() + 0.05  # no pidfd (rare): fall back to polling
        if self._kill_at is not None:
            return self._kill_at
        return self._deadline if self._reason == "exit" else None

    def poll(self, now: Optional[float] = None) -> Optional[Outcome]:
        """The outcome once the command has ended, else None; enforces the timeout and the kill grace."""
        if self._outcome is None:
            assert self._popen is not None
            code = self._popen.poll()
            if code is not None:
                self._finish(code)
            else:
                self._enforce(time.time() if now is None else now)
        if self._outcome is not None:
            self._reported = True
        return self._outcome

    def kill(self, reason: str = "killed") -> None:
        """Begin SIGTERM -> kill_grace -> SIGKILL of the whole group; later polls complete it."""
        if self._outcome is None and self._popen is not None and self._popen.returncode is None:
            self._terminate(reason, time.time())

    def read_tail(self, limit: int = TAIL_LIMIT) -> str:
        """The last `limit` bytes of this execution's output so far (decoded), for a live view."""
        if self._outcome is not None:
            return self._outcome.tail[-limit:] if limit else ""
        return _decode(_read_tail(self._out, limit))

    def wait(self) -> Outcome:
        """Block until the command has ended (a helper built on poll)."""
        poller = select.poll()
        if self._pidfd >= 0:
            poller.register(self._pidfd, select.POLLIN)
        while (outcome := self.poll()) is None:
            deadline = self.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.time()) * 1000
            poller.poll(timeout)
        return outcome

    def close(self) -> None:
        """Release the pidfd (after unregistering it from any selector) and the output file."""
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        self._close_out()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: os may already be gone
            pass

    # -- internals --
    def _spawn(self) -> None:
        spec = self.spec
        if not spec.argv:
            raise FileNotFoundError(2, "empty command", "")
        out = self._child_out()
        if spec.cwd:
            self._popen = subprocess.Popen(
                list(spec.argv), stdin=_devnull_fd(), stdout=out, stderr=subprocess.STDOUT,
                cwd=spec.cwd, env=spec.env, close_fds=True, start_new_session=True)
        else:
            self._popen = Spawned(posix_spawn(spec.argv, spec.env, out, _devnull_fd()))
        self.pid = self.pgid = self._popen.pid
        try:
            self._pidfd = os.pidfd_open(self.pid)  # the unreaped child cannot vanish before this
        except OSError as e:
            log.warning("runner: no pidfd for pid %s (%s): polling instead", self.pid, e)

    def _fail(self, error: BaseException) -> None:
        """Record a command that could not start: 127 when not found, else 126, and say why in its output."""
        self._reason = "spawn_error"
        errno_ = getattr(error, "errno", None)
        text = getattr(error, "strerror", None) or str(error)
        if self.spec.cwd and getattr(error, "filename", None) == self.spec.cwd:
            what = f"cannot change to directory {self.spec.cwd!r}"
        else:
            what = f"cannot run {(self.spec.argv[0] if self.spec.argv else '')!r}"
        out = self._child_out()
        if out >= 0:
            _write(out, f"angora: {what}: {text}\n")
        self._finish(127 if errno_ == errno.ENOENT else 126, f"angora: {what}: {text}")

    def _terminate(self, reason: str, now: float) -> None:
        if self._reason != "exit":
            return  # already ending: the first reason wins and the grace is not restarted
        self._reason = reason
        if self.spec.kill_grace > 0:
            self._signal_all(signal.SIGTERM)
            self._kill_at = now + self.spec.kill_grace
        else:
            self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: int) -> None:
        """The group, and the command's processes that left it (found first: the leader may die)."""
        if self.pid is not None and self.pgid is not None:
            escaped = signal_escaped(self.pid, self.pgid, sig, self.spec.env.get(EXECUTION_VAR, ""))
            signal_group(self.pgid, sig)
            if escaped:
                log.info("runner: %s sent to %d process(es) of pid %s outside its group", signal.Signals(sig).name,
                         escaped, self.pid)

    def _enforce(self, now: float) -> None:
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            self._signal_all(signal.SIGKILL)
        elif self._reason == "exit" and self._deadline is not None and now >= self._deadline:
            self._terminate("timeout", now)

    def _finish(self, returncode: int, tail: Optional[str] = None) -> None:
        # Reaped just now, so the group id cannot have been reused yet: end any member left behind.
        leftovers = self.pgid is not None and signal_group(self.pgid, signal.SIGKILL)
        duration = time.monotonic() - self._t0
        code, sig = (returncode, None) if returncode >= 0 else (None, -returncode)
        data = _read_tail(self._out, self.spec.tail_limit)
        if self._log >= 0:
            note = "; killed leftover processes" if leftovers else ""
            nl = "\n" if data and not data.endswith(b"\n") else ""
            when = datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="milliseconds")
            head = f"=== {self.spec.header} started {when.replace('+00:00', 'Z')} ===\n"
            foot = (f"{nl}=== {self.spec.header} exited {_status(code, sig)} after {duration:.3f}s "
                    f"({self._reason}{note}) ===\n")
            _append_block(self._log, head.encode(), self._out, data, foot.encode())
        self._close_out()
        self._outcome = Outcome(code, sig, self._reason, self.started, self.started + duration, duration,
                                _decode(data) if data or tail is None else tail, _take_output(self.spec.output_path))

    def _child_out(self) -> int:
        """The descriptor the command writes its output to."""
        return self._writer if self._writer >= 0 else self._out

    def _close_writer(self) -> None:
        """Once the command started (or could not): only it keeps its descriptor of the spool file."""
        if self._writer >= 0:
            os.close(self._writer)
            self._writer = -1

    def _close_out(self) -> None:
        self._close_writer()
        if self._out >= 0:
            spoolfiles.give_back(self._out, self.spec.spool_dir or "/tmp", self._reusable)
            self._out = -1
        if self._log >= 0:
            os.close(self._log)
            self._log = -1


# -- starting --------------------------------------------------------------------------------------------
def start(spec: CommandSpec) -> RunningCommand:
    """Start a command in its own session; never raises for a command that cannot start (see Outcome)."""
    started = time.time()
    try:
        out, writer, log_fd = _open_output(spec)
    except OSError as e:
        cmd = RunningCommand(spec, started, -1)
        where = spec.log_path or spec.spool_dir
        cmd._reason = "spawn_error"
        cmd._finish(126, f"angora: cannot open output file in {where!r}: {e.strerror or e}")
        return cmd
    cmd = RunningCommand(spec, started, out, log_fd, writer)
    try:
        cmd._spawn()
    except (OSError, ValueError, TypeError, subprocess.SubprocessError) as e:
        cmd._fail(e)
    finally:
        cmd._close_writer()
    return cmd


def run(spec: CommandSpec) -> Outcome:
    """Start a command and wait for its outcome (blocking)."""
    cmd = start(spec)
    try:
        return cmd.wait()
    finally:
        cmd.close()


def _open_output(spec: CommandSpec) -> tuple[int, int, int]:
    """This execution's spool file (reader, the command's writer: spoolfiles.take) and the job's log (-1 when it
    has none)."""
    log_fd = (spoolfiles.open_in_dir(spec.log_path, os.path.dirname(spec.log_path), _LOG_FLAGS, 0o644)
              if spec.log_path else -1)
    try:
        return (*spoolfiles.take(spec.spool_dir or "/tmp"), log_fd)
    except OSError:
        if log_fd >= 0:
            os.close(log_fd)
        raise


def _append_block(log_fd: int, head: bytes, out: int, tail: bytes, foot: bytes) -> None:
    """Append head, the whole output and foot to the log as one block: an exclusive flock keeps other writers'
    blocks (executions of the same job, in this worker or another) out of it."""
    try:
        size = os.fstat(out).st_size if out >= 0 else 0
        fcntl.flock(log_fd, fcntl.LOCK_EX)
        try:
            if size == len(tail):  # the tail is all of it (the usual case): one write
                _write_all(log_fd, head + tail + foot)
            else:
                _write_all(log_fd, head)
                for at in range(0, size, _COPY_CHUNK):
                    _write_all(log_fd, os.pread(out, min(_COPY_CHUNK, size - at), at))
                _write_all(log_fd, foot)
        finally:
            fcntl.flock(log_fd, fcntl.LOCK_UN)
    except OSError as e:  # a full disk must not turn into an exception in the worker loop
        log.warning("runner: cannot append to the log: %s", e)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- small helpers -------------------------------------------------------------------------------------
def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _take_output(path: Optional[str]) -> bytes:
    """What the command wrote to its $ANGORA_OUTPUT file (up to MAX_OUTPUT + 1 bytes), removing the file.

    Usually there is none (one failed open). Never follows a symlink, never waits on a FIFO: whatever the
    command left there, the worker's loop must not block on it.
    """
    if not path:
        return b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:  # none written: the usual case
        return b""
    except OSError:  # a symlink, or something else that is not the command's file to read: dropped
        _unlink(path)
        return b""
    try:
        os.unlink(path)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, MAX_OUTPUT + 1, 0)
    except OSError as e:
        log.warning("runner: cannot read %s: %s", path, e)
        return b""
    finally:
        os.close(fd)


def _read_tail(fd: int, limit: int) -> bytes:
    if fd < 0 or limit <= 0:
        return b""
    end = os.fstat(fd).st_size
    begin = max(0, end - limit)
    data = os.pread(fd, end - begin, begin) if end > begin else b""
    if begin > 0:  # cut inside the output: skip a split UTF-8 character
        data = data[next((i for i, b in enumerate(data[:4]) if b & 0xC0 != 0x80), 0):]
    return data


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode("utf-8", errors="replace"))
    except OSError as e:  # a full disk must not turn into an exception in the worker loop
        log.warning("runner: cannot write to output file: %s", e)


def _status(code: Optional[int], sig: Optional[int]) -> str:
    if sig is None:
        return str(code)
    try:
        return f"signal {signal.Signals(sig).name}"
    except ValueError:
        return f"signal {sig}"


def _devnull_fd() -> int:
    """One /dev/null fd for every child's stdin (saves an open and a close per command)."""
    global _devnull
    if _devnull < 0:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull
