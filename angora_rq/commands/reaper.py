"""Processes that leave their command's process group: found, tied to their execution, and ended.

A command leads its own session and process group, and `killpg` ends that group. A process can leave it:
`setsid sleep 300 &`, or a daemon that double-forks and calls setsid. Two nets catch those:

- On a timeout or a kill, `signal_escaped` finds them in the leader's process tree (`/proc/<pid>/task/<tid>/
  children`) and among the worker's adopted orphans (below) that carry the execution's marker, and signals them
  along with the group: they get the same SIGTERM, grace and SIGKILL.
- Once its parent has died, Linux gives a process to its nearest *child subreaper* ancestor (or init). A worker
  makes itself one (`prctl(PR_SET_CHILD_SUBREAPER)`), so whatever escaped becomes its child. `Orphans` finds the
  worker's children that it did not start, reads which execution each belongs to (the ANGORA_EXECUTION_ID in
  `/proc/<pid>/environ`) and ends it, with its own descendants, once that execution is over. A child without
  the marker is left alone (it may be the host process's own, e.g. in tests): a process that clears its
  environment and leaves its group escapes both nets.

Nothing here runs per command. A worker sweeps for a second after an execution ends by timeout or kill (the
escaped processes reach it as their parents die), when an execution that one of them belongs to ends, when a
child it did not start exits, and every CHECK_EVERY seconds (one read of its children list, ~5 us).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from typing import AbstractSet, Callable, Optional

from angora_rq.commands.signals import signal_group

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
EXECUTION_VAR = "ANGORA_EXECUTION_ID"  # set in every command's environment (launch.py); children inherit it
MARK = EXECUTION_VAR.encode() + b"="
CHECK_EVERY = 2.0  # seconds between looks for children nobody asked about
SETTLE = 1.0  # seconds to keep sweeping after a timeout or kill: the escaped reach us as their parents die
RESWEEP = 0.05  # seconds between sweeps while they do
MAX_TREE = 100_000  # processes walked in one tree at most (a fork bomb must not hang the worker)


def set_subreaper(on: bool) -> bool:
    """Make this process a child subreaper (or stop being one); False where the kernel or libc refuses."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children(pid: int) -> list[int]:
    """The children of every thread of `pid` ([] when it is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        found += _read_pids(f"/proc/{pid}/task/{tid}/children")
    return found


def subtree(pid: int) -> list[int]:
    """Every descendant of `pid` (not `pid` itself), parents before their children."""
    found: list[int] = []
    seen, i = {pid}, 0
    todo = [pid]
    while i < len(todo) and len(found) < MAX_TREE:
        for child in children(todo[i]):
            if child not in seen:
                seen.add(child)
                found.append(child)
                todo.append(child)
        i += 1
    return found


def signal_escaped(leader: int, pgid: int, sig: int, execution: str = "") -> int:
    """Send `sig` to the processes of a command outside its group `pgid`; how many there were.

    Those are the descendants of `leader` in another group, and, with `execution`, the children of this process
    (a subreaper's adopted orphans) that carry its marker, with their descendants. Each gets `sig`, and so does a
    group it leads.
    """
    targets = [pid for pid in subtree(leader) if _pgid(pid) not in (None, pgid)]
    if execution:
        for child in children(os.getpid()):
            if child != leader and execution_of(child) == execution:
                targets += [child, *subtree(child)]
    n = 0
    for pid in targets:
        n += _signal(pid, sig)
        if _pgid(pid) == pid:
            signal_group(pid, sig)
    return n


def execution_of(pid: int) -> str:
    """The ANGORA_EXECUTION_ID in a process's environment; '' when it has none or it cannot be read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    if data.startswith(MARK):
        at = 0
    else:
        at = data.find(b"\0" + MARK) + 1
        if not at:
            return ""
    value = data[at + len(MARK):].split(b"\0", 1)[0]
    return value.decode("utf-8", errors="replace")


class Orphans:
    """This process's children that it did not start: each is ended once its execution is over."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.active = False  # a subreaper: escaped processes come here
        self.owner: dict[int, str] = {}  # child pid -> its execution ('' when unmarked), for those left running
        self._sweep_at: Optional[float] = None
        self._settle_until = 0.0
        self._check_at = 0.0

    def adopt(self) -> bool:
        """Become a child subreaper (logs when the kernel refuses: then escaped processes go to init)."""
        self.pid = os.getpid()
        self.active = set_subreaper(True)
        if not self.active:
            log.warning("cannot become a child subreaper: processes that leave their command's group and "
                        "outlive their parent are not ended by this worker")
        return self.active

    def ended(self, execution: str, reason: str, now: float) -> None:
        """An execution has ended: sweep now (and for SETTLE seconds on a timeout or kill) if it may have left any."""
        if reason in ("timeout", "killed"):
            self._settle_until = max(self._settle_until, now + SETTLE)
            self._sweep_at = now
        elif self.owner and execution in self.owner.values():
            self._sweep_at = now

    def next_deadline(self) -> Optional[float]:
        """When step() must run even if nothing else happens, or None."""
        return self._sweep_at

    def step(self, now: float, known: Callable[[], AbstractSet[int]], live: Callable[[], AbstractSet[str]]) -> int:
        """Sweep when one is due, a child nobody knows has exited, or (every CHECK_EVERY) an unknown child exists."""
        if not self.active:
            return 0
        due = self._sweep_at is not None and now >= self._sweep_at
        if not due and now >= self._check_at:
            self._check_at = now + CHECK_EVERY
            mine = known()
            due = any(p not in mine and p not in self.owner for p in _read_pids(self._list()))
        if not due:
            exited = _exited_child()
            due = exited is not None and exited not in known()
        if not due:
            return 0
        n = self.sweep(known(), live())
        if n or now < self._settle_until:
            self._sweep_at = now + RESWEEP
        else:
            self._sweep_at = None
        return n

    def sweep(self, known: AbstractSet[int], live: AbstractSet[str]) -> int:
        """Reap the children that exited; end those whose execution is over. Returns how many were ended."""
        n = 0
        left = set(children(self.pid)) - known
        for pid in list(left):
            if _reaped(pid):
                left.discard(pid)
                continue
            xid = self.owner.get(pid)
            if xid is None:
                xid = self.owner[pid] = execution_of(pid)
            if xid and xid not in live:
                _end_tree(pid)
                n += 1
        self.owner = {pid: xid for pid, xid in self.owner.items() if pid in left}
        if n:
            log.info("ended %d process(es) left behind by finished commands", n)
        return n

    def release(self, known: AbstractSet[int], within: float = 2.0) -> None:
        """On exit: end every marked child not in `known` (no execution runs any more); stop being a subreaper."""
        if not self.active:
            return
        until = time.monotonic() + within
        while self.sweep(known, frozenset()) or any(self.owner.values()):
            if time.monotonic() >= until:
                log.warning("processes left behind by commands are still exiting")
                break
            time.sleep(RESWEEP)
        set_subreaper(False)
        self.active = False

    def _list(self) -> str:
        return f"/proc/{self.pid}/task/{self.pid}/children"  # the main thread's: commands start there


def _end_tree(pid: int) -> None:
    """SIGKILL a child of ours, the group it leads and every descendant (found before it dies)."""
    below = subtree(pid)
    if _pgid(pid) == pid:
        signal_group(pid, signal.SIGKILL)  # safe: our unreaped child still holds this group id
    _signal(pid, signal.SIGKILL)
    for p in below:
        _signal(p, signal.SIGKILL)


def _read_pids(path: str) -> list[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        data = os.read(fd, 1 << 20)
    except OSError:
        return []
    finally:
        os.close(fd)
    return [int(p) for p in data.split()]


def _exited_child() -> Optional[int]:
    """The pid of a child that has exited and not been reaped (peeked: it stays to be reaped), or None."""
    try:
        res = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return res.si_pid if res is not None else None


def _reaped(pid: int) -> bool:
    """Reap `pid` if it has exited; True then (or if it is not our child any more)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def _pgid(pid: int) -> Optional[int]:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal(pid: int, sig: int) -> int:
    try:
        os.kill(pid, sig)
        return 1
    except (ProcessLookupError, PermissionError):
        return 0
