"""Start a command with os.posix_spawn, keeping what Popen(close_fds=True, start_new_session=True) guarantees."""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, Sequence

CLOSE_RANGE_CLOEXEC = 4  # linux/close_range.h: mark the range close-on-exec instead of closing it (Linux 5.11)
# close_range's number where the raw system call is used (a libc before glibc 2.34): 436 on the architectures of the
# unified table (Linux 5.9); others (MIPS, Alpha) number it otherwise, and scan instead.
SYS_CLOSE_RANGE = {"x86_64": 436, "aarch64": 436, "riscv64": 436, "ppc64le": 436, "s390x": 436}


class Spawned:
    """The part of Popen's interface the runner uses, for a child started by os.posix_spawn."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        """The exit status (negative: killed by that signal) once the child has ended, else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (cannot happen in a worker): report it as lost
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


_found: dict[tuple[str, str], str] = {}  # (name, PATH) -> the file found last time
_in_batch = False
_close_range: Any = None  # libc's close_range (or syscall), found on first use; False where there is none


@contextmanager
def batch() -> Iterator[None]:
    """Spawns inside check for inheritable descriptors once, on entry, instead of once each.

    For a worker starting a claimed batch: between those spawns only the runner runs, and everything it opens
    is close-on-exec.
    """
    global _in_batch
    _no_inherited_fds()
    outer, _in_batch = _in_batch, True
    try:
        yield
    finally:
        _in_batch = outer


def posix_spawn(argv: Sequence[str], env: Mapping[str, str], out: int, devnull: int) -> int:
    """Start argv in a new session, stdin on `devnull` and stdout+stderr on `out`; return its pid.

    posix_spawn (vfork + exec in C) costs ~120 us less per command than Popen, which is most of the
    difference at thousands of commands a second. What Popen(close_fds=True, start_new_session=True) did and
    posix_spawn does not is done here: PATH is searched in the command's own environment, SIGPIPE/SIGXFSZ are
    reset to their defaults, and no descriptor but 0-2 reaches the child (any inheritable one is made
    close-on-exec first).
    """
    if not _in_batch:
        _no_inherited_fds()  # every time: a library may have made one inheritable since the last command
    path = _which(argv[0], env)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 0)]
    if out >= 0:
        actions += [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]
    else:
        actions += [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    return os.posix_spawn(path, list(argv), env, file_actions=actions, setsid=True,
                          setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))


def _which(name: str, env: Mapping[str, str]) -> str:
    """The file exec would run for `name`, searching the command's own PATH as Popen does."""
    if "/" in name:
        return name
    search = env.get("PATH", os.defpath)
    known = _found.get((name, search))
    if known is not None and os.access(known, os.X_OK):  # one syscall instead of a stat per PATH entry
        return known
    denied = False
    for directory in search.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                if len(_found) > 1024:
                    _found.clear()
                _found[(name, search)] = candidate
                return candidate
            denied = True  # like execvp: remember, keep looking, and say so if nothing runnable is found
    if denied:
        raise PermissionError(errno.EACCES, "Permission denied", name)
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)


def _no_inherited_fds() -> None:
    """Mark every inheritable descriptor above 2 close-on-exec (inherited ones, or made so by a library).

    One close_range(3, ~0, CLOSE_RANGE_CLOEXEC) system call where the kernel has it (1.5 us), else a scan of
    /proc/self/fd (42 us with 36 descriptors; 72 us p50 per claimed batch in a worker under load).
    """
    if _cloexec_above_2():
        return
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, already closed


def _cloexec_above_2() -> bool:
    """close_range(3, ~0U, CLOSE_RANGE_CLOEXEC); False where libc or the kernel (before 5.11) lacks it."""
    global _close_range
    if _close_range is None:
        _close_range = _find_close_range()
    if _close_range is False:
        return False
    if _close_range(3, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC) == 0:
        return True
    _close_range = False  # ENOSYS or EINVAL: this kernel lacks the call or the flag; scan from now on
    return False


def _find_close_range() -> Any:
    """libc's close_range (glibc 2.34), else the raw system call; False where neither can be called."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    fn = getattr(libc, "close_range", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
        fn.restype = ctypes.c_int
        return fn
    syscall = getattr(libc, "syscall", None)
    number = SYS_CLOSE_RANGE.get(platform.machine())
    if syscall is None or number is None:
        return False
    syscall.restype = ctypes.c_long
    return lambda first, last, flags: syscall(ctypes.c_long(number), ctypes.c_uint(first), ctypes.c_uint(last),
                                              ctypes.c_int(flags))
