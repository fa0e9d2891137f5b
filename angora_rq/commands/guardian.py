"""A watchdog process that ends a worker's command groups if the worker dies without ending them itself.

Commands run in their own sessions, so a SIGKILLed worker would leave them running. The worker starts a tiny
`/bin/sh` program (dash: ~1.6 MiB RSS, most of it shared; a Python guardian cost ~10 MiB) in its own session,
ignoring SIGINT/SIGTERM/SIGHUP/SIGPIPE, with two links to the worker:

- a table of the process groups to end: an anonymous shared file (memfd) that the worker maps into memory and
  updates in place, one fixed-width line per slot. `track`/`untrack` are a few memory stores: no system call
  and no wake-up of the guardian (a marker file per group cost ~20 us per command in create + unlink), and
  there is no directory to clean up or to find stale after a crash;
- a pipe on the guardian's stdin, whose write end only the worker holds (close-on-exec: every command is
  exec'd, so none inherits it). The guardian blocks reading it. `q` (written by `close()`) means a clean
  shutdown: it exits and ends nothing. EOF means the worker is gone: it SIGTERMs every group in the table,
  waits up to GRACE seconds for them to go, SIGKILLs the survivors and exits.

A process can leave its command's group (`setsid sleep 300 &`, a daemon that double-forks): the table does not
name it, and once the worker is dead it belongs to init. So every command of the worker carries an environment
marker, `ANGORA_GUARDIAN=<token of this guardian>` (`Guardian.environment()`), which its children inherit. On EOF
the guardian also finds every process carrying it (one `grep -z` over /proc/*/environ) and ends it with the
groups, then SIGKILLs whatever still carries it until none is left (what they forked during the grace). Without
a `grep` that knows `-z` it ends the groups only, and says so at start.

The Python guardian also checked every second whether its parent had changed, in case a forked child of the
worker kept the pipe open. Nothing in the worker forks without exec (commands start through posix_spawn, or
Popen with close_fds), and the pipe is close-on-exec, so EOF comes exactly when the worker dies: `read` in sh
has no timeout, and polling would cost a `sleep` process every second, so that check is gone.
"""
from __future__ import annotations

import logging
import math
import mmap
import os
import select
import subprocess
import tempfile
import time
import uuid
from typing import Optional

from angora_rq.core.errors import AngoraError

log = logging.getLogger(__name__)

DEFAULT_GRACE = 5.0
POLL = 0.05  # seconds between the guardian's checks whether the SIGTERMed groups are gone
START_TIMEOUT = 10.0  # seconds for the shell to say it is ready
ALIVE_CHECK_EVERY = 1.0  # seconds; how often flush() looks whether the guardian is still there
SHELL = "/bin/sh"
MARKER = "ANGORA_GUARDIAN"  # the environment variable naming the guardian that ends a command's processes

# A slot is a line: the pgid right-aligned in 10 digits, a flag ('+' tracked, ' ' free), '\n'. track() writes
# the digits, then the flag; untrack() clears only the flag. Each is its own store, so a worker killed between
# or during them leaves a line that is a whole tracked pgid or has no '+': never half of one number and half of
# another (a single 11-byte copy could be torn that way).
SLOT = 12
DIGITS = 10
MAX_PGID = 10**DIGITS - 1
TRACKED, FREE = ord("+"), ord(" ")
BLANK = b" " * (SLOT - 1) + b"\n"
FIRST_SLOTS = mmap.PAGESIZE // SLOT

# The guardian's whole program ($1: the table's descriptor number, $2: how many POLL rounds make the grace,
# $3=$4: the environment marker of the worker's commands).
# dash redirects only descriptors 0-9, so the table is reopened as fd 3 through /dev/fd: a fresh open file
# with its own offset. The first line is a comment so that `ps` shows what this shell is.
SCRIPT = r"""# angora guardian: ends the worker's commands if the worker dies (angora_rq/commands/guardian.py)
trap '' INT TERM HUP PIPE
exec 3<"/dev/fd/$1" || exit 3
command -v sleep >/dev/null || exit 4  # the grace needs it: fail now, not when the worker dies
mark="$3=$4"
if printf 'x\0%s\0' "$mark" | grep -qsxzF -e "$mark" 2>/dev/null; then
  echo ready || exit 3
else
  mark=
  echo "ready without-marker" || exit 3  # no grep -z: groups only
fi
exec >/dev/null
IFS= read -r line
[ "$line" = q ] && exit 0
marked() {  # pids of the processes carrying the marker: commands and all they started, wherever they went
  [ -n "$mark" ] || return 0
  grep -lsxzF -e "$mark" /proc/[0-9]*/environ 2>/dev/null | while IFS=/ read -r _ _ p _; do echo "$p"; done
}
alive= n=0
while read -r g; do
  case $g in *+) g=${g%+} ;; *) continue ;; esac
  case $g in ''|0*|1|*[!0-9]*) continue ;; esac  # never -0 (our group) or -1 (every process)
  kill -s TERM -- "-$g" 2>/dev/null && alive="$alive -$g" && n=$((n + 1))
done <&3
for p in $(marked); do
  kill -s TERM "$p" 2>/dev/null && alive="$alive $p" && n=$((n + 1))
done
[ -n "$alive" ] || exit 0
echo "angora guardian: the worker is gone; ending $n command group(s) and process(es)" >&2
i=0
while [ -n "$alive" ] && [ "$i" -lt "$2" ]; do
  if ! sleep 0.05 2>/dev/null; then  # a sleep without fractions: wait longer, never shorter
    sleep 1
  fi
  i=$((i + 1))
  left=
  for x in $alive; do
    kill -s 0 -- "$x" 2>/dev/null && left="$left $x"
  done
  alive=$left
done
for x in $alive; do
  kill -s KILL -- "$x" 2>/dev/null
done
i=0
while [ "$i" -lt 40 ]; do  # what they started meanwhile carries the marker too
  left=$(marked)
  [ -n "$left" ] || break
  kill -s KILL $left 2>/dev/null
  sleep 0.05 2>/dev/null || sleep 1
  i=$((i + 1))
done
exit 0
"""

class Guardian:
    """The worker's handle on its guardian process: which process groups to end if the worker dies."""

    def __init__(self, proc: subprocess.Popen[bytes], pipe: int, table: int, token: str) -> None:
        self.proc = proc
        self.token = token  # the value of MARKER in the environment of the commands this guardian ends
        self._pipe = pipe  # write end of the guardian's stdin: EOF there tells it the worker is gone
        self._table = table  # the shared file the guardian reads the groups from
        self._slots: dict[int, int] = {}  # tracked pgid -> its line's offset in the table
        self._free: list[int] = []  # offsets of free lines; pop() takes the last
        self._map: Optional[mmap.mmap] = None
        self._next_check = 0.0
        self._grow(FIRST_SLOTS)

    @property
    def pid(self) -> int:
        """The guardian process's pid."""
        return self.proc.pid

    @classmethod
    def start(cls, grace: float = DEFAULT_GRACE) -> Guardian:
        """Start the guardian process (in its own session, so a signal to the worker's group spares it)."""
        table = _anonymous_file()
        read_end, write_end = os.pipe()
        token = uuid.uuid4().hex
        proc: Optional[subprocess.Popen[bytes]] = None
        try:
            try:
                proc = _spawn(table, read_end, grace, token)
            finally:
                os.close(read_end)
            if not _await_ready(proc):
                log.warning("the guardian has no grep -z: if this worker is killed, processes that left their "
                            "command's process group survive it")
            return cls(proc, write_end, table, token)
        except BaseException:
            os.close(write_end)
            os.close(table)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            raise

    def environment(self) -> dict[str, str]:
        """What each command's environment must hold for this guardian to find its processes."""
        return {MARKER: self.token}

    # track and untrack run once per command each (~1,000 commands a second): a few memory stores, no system call.
    def track(self, pgid: int) -> None:
        """End this process group if the worker dies (from now on: the table is shared memory)."""
        slots = self._slots
        if pgid in slots:
            return
        if not 1 < pgid <= MAX_PGID:  # the guardian never signals -0 (itself) or -1 (every process) either
            raise ValueError(f"not a command's process group: {pgid}")
        if not self._free:
            self._grow(len(slots))
        at = slots[pgid] = self._free.pop()
        m = self._map
        assert m is not None
        m[at:at + DIGITS] = str(pgid).rjust(DIGITS).encode()
        m[at + DIGITS] = TRACKED  # last: the line counts only once it is whole

    def untrack(self, pgid: int) -> None:
        """The group has ended: forget it."""
        at = self._slots.pop(pgid, None)
        if at is not None:
            assert self._map is not None
            self._map[at + DIGITS] = FREE
            self._free.append(at)

    def flush(self) -> None:
        """At most once a second, say so if the guardian has died (track/untrack have nothing to write out)."""
        now = time.monotonic()
        if now < self._next_check or self._pipe < 0:
            return
        self._next_check = now + ALIVE_CHECK_EVERY
        if self.proc.poll() is not None:
            log.error("guardian %s is gone (exit status %s): commands will survive if this worker is killed",
                      self.proc.pid, self.proc.returncode)
            self._next_check = math.inf  # said once

    def close(self, timeout: float = 5.0) -> None:
        """Clean shutdown (the worker has ended its commands): the guardian exits and ends nothing."""
        if self._pipe >= 0:
            try:
                os.write(self._pipe, b"q\n")
            except BrokenPipeError:
                pass  # already gone: nothing to tell it
            os.close(self._pipe)
            self._pipe = -1
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("guardian %s did not exit; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.wait()
        self._slots, self._free = {}, []  # a later track() grows the table: an error, below
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._table >= 0:
            os.close(self._table)
            self._table = -1

    def _grow(self, more: int) -> None:
        """Append `more` free lines (blank: the file never holds a NUL) and map the whole table again."""
        if self._table < 0:
            raise AngoraError("the guardian is closed: it can track nothing more")
        have = (len(self._slots) + len(self._free)) * SLOT
        os.pwrite(self._table, BLANK * more, have)
        self._free[:0] = range(have + (more - 1) * SLOT, have - 1, -SLOT)
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self._table, have + more * SLOT)


def _anonymous_file() -> int:
    """A close-on-exec descriptor of a file with no name: a memfd, or an unlinked temp file without memfd."""
    try:
        return os.memfd_create("angora-guardian", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="angora-guardian-")
        os.unlink(path)
        return fd


def _spawn(table_fd: int, stdin: int, grace: float, token: str) -> subprocess.Popen[bytes]:
    """Start the shell with the table's descriptor and the pipe's read end as stdin."""
    rounds = max(0, math.ceil(grace / POLL))
    try:
        return subprocess.Popen(
            [SHELL, "-c", SCRIPT, "angora-guardian", str(table_fd), str(rounds), MARKER, token],
            stdin=stdin, stdout=subprocess.PIPE, cwd="/", env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            close_fds=True, pass_fds=(table_fd,), start_new_session=True)
    except OSError as e:
        raise AngoraError(f"cannot start the guardian process ({SHELL}): {e}") from e


def _await_ready(proc: subprocess.Popen[bytes]) -> bool:
    """Wait for the shell's `ready` (its signals are set up by then); AngoraError if it exits or stays silent.

    False when it said it cannot find processes by their marker.
    """
    assert proc.stdout is not None
    with proc.stdout:
        readable, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        ready = proc.stdout.readline() if readable else b""
    if ready in (b"ready\n", b"ready without-marker\n"):
        return ready == b"ready\n"
    try:
        what = f"exit status {proc.wait(START_TIMEOUT if readable else 0)}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        what = f"no answer within {START_TIMEOUT:.0f}s"
    raise AngoraError(f"the guardian process did not start ({what})")
