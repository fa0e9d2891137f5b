"""A watchdog process that ends a worker's command groups if the worker dies without ending them itself.

Commands run in their own sessions, so a SIGKILLed worker would leave them running. The worker starts this
file as a separate tiny process (`python -I -S guardian.py GRACE`, stdin = a pipe) and writes one line per
change: `+<pgid>` (track), `-<pgid>` (untrack), `q` (clean shutdown: exit, end nothing). When the pipe hits
EOF or the parent changes (the worker is gone), the guardian SIGTERMs every tracked group, waits GRACE
seconds, SIGKILLs the survivors and exits.
"""
from __future__ import annotations

# This file is also the guardian process's whole program: it imports only these few small built-ins so the
# watchdog costs little memory; what the worker-side class needs is imported only when this is a module.
import os
import select
import signal
import sys
import time

if __name__ != "__main__":
    import logging
    import subprocess

    from .errors import AngoraError

    log = logging.getLogger(__name__)

PARENT_CHECK_EVERY = 1.0  # seconds; in case a forked child of the worker keeps the pipe open
DEFAULT_GRACE = 5.0


# -- the guardian process ----------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    """Run the guardian: follow the worker's lines, then end what is left if the worker is gone."""
    grace = float(argv[1]) if len(argv) > 1 else DEFAULT_GRACE
    # Ctrl-C reaches the whole foreground group and supervisors signal theirs: the worker decides, not us.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    os.write(1, b"ready\n")  # from here on, the worker may count on us
    os.close(1)
    groups = follow(sys.stdin.fileno(), os.getppid())
    if groups:
        end_groups(groups, grace)
    return 0


def follow(fd: int, parent: int) -> set[int] | None:
    """Track `+pgid`/`-pgid` lines; None after `q`, the tracked groups once the worker is gone."""
    groups: set[int] = set()
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], PARENT_CHECK_EVERY)
        if not ready:
            if os.getppid() != parent:
                return groups
            continue
        data = os.read(fd, 65536)
        if not data:
            return groups
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if line == b"q":
                return None
            try:
                pgid = int(line[1:])
            except ValueError:
                continue  # not ours to die on: keep guarding the rest
            if line[:1] == b"+":
                groups.add(pgid)
            elif line[:1] == b"-":
                groups.discard(pgid)


def end_groups(groups: set[int], grace: float) -> None:
    """SIGTERM every group, wait up to `grace` for them to go, SIGKILL the survivors."""
    alive = signal_groups(groups, signal.SIGTERM)
    if alive:
        print(f"angora guardian: the worker is gone; ending {len(alive)} command group(s)", file=sys.stderr)
    until = time.monotonic() + grace
    while alive and time.monotonic() < until:
        time.sleep(0.05)
        alive = signal_groups(alive, 0)
    signal_groups(alive, signal.SIGKILL)


def signal_groups(groups: set[int], sig: int) -> set[int]:
    """Send `sig` to each group; return those that still exist (and that we may signal)."""
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive.add(pgid)
        except OSError:  # gone (ESRCH) or not ours any more (EPERM): nothing to do either way
            pass
    return alive


# -- the worker's side -----------------------------------------------------------------------------------
class Guardian:
    """The worker's handle on its guardian process: which process groups to end if the worker dies."""

    def __init__(self, proc: subprocess.Popen[bytes], fd: int) -> None:
        self.proc = proc
        self._fd = fd  # write end of the guardian's stdin, non-blocking
        self._pending = b""  # lines not yet written because the pipe was full

    @property
    def pid(self) -> int:
        """The guardian process's pid."""
        return self.proc.pid

    @classmethod
    def start(cls, grace: float = DEFAULT_GRACE) -> Guardian:
        """Start the guardian process (in its own session, so a signal to the worker's group spares it)."""
        read_end, write_end = os.pipe()
        try:
            # -I -S: no site, no user paths, no package import; it needs nothing but this file.
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), repr(float(grace))],
                stdin=read_end, stdout=subprocess.PIPE, cwd="/", close_fds=True, start_new_session=True)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        assert proc.stdout is not None
        with proc.stdout:
            ready = proc.stdout.readline()  # once, at worker start: its signals are set up after this
        if ready != b"ready\n":
            os.close(write_end)
            raise AngoraError(f"the guardian process did not start (exit status {proc.wait()})")
        os.set_blocking(write_end, False)
        return cls(proc, write_end)

    def track(self, pgid: int, flush: bool = True) -> None:
        """Ask the guardian to end this process group if the worker dies (flush=False: at the next flush())."""
        self._pending += b"+%d\n" % pgid
        if flush:
            self.flush()

    def untrack(self, pgid: int, flush: bool = True) -> None:
        """The group has ended: forget it (flush=False: at the next flush())."""
        self._pending += b"-%d\n" % pgid
        if flush:
            self.flush()

    def flush(self) -> None:
        """Write what is pending: one write per worker loop step instead of one per line (each wakes the guardian)."""
        if self._pending:
            self._send(b"")

    def close(self, timeout: float = 5.0) -> None:
        """Clean shutdown (the worker has ended its commands): the guardian exits and ends nothing."""
        if self._fd >= 0:
            self._send(b"q\n")
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("guardian %s did not exit; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.wait()

    def _send(self, line: bytes) -> None:
        """One non-blocking write; a full pipe keeps the rest for the next call, a dead guardian is logged."""
        if self._fd < 0:
            return
        self._pending += line
        try:
            written = os.write(self._fd, self._pending)
            self._pending = self._pending[written:]
        except BlockingIOError:
            if len(self._pending) > 65536:
                log.warning("guardian %s is not reading (%d bytes waiting)", self.proc.pid, len(self._pending))
        except BrokenPipeError:
            log.error("guardian %s is gone: commands will survive if this worker is killed", self.proc.pid)
            os.close(self._fd)
            self._fd = -1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
