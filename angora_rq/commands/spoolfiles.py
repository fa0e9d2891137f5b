"""The spool files commands write their output to: unnamed files, each reused by later commands of this process
once nothing can write to it any more.

Why reuse: a new unnamed file per command costs the filesystem an inode each time, and on ext4 (where the data
folder usually is) that allocation grows with the churn of recently freed inodes. Under `/send` load it was
about 6 % of a worker's CPU with its commands' (perf), and the same benchmark with the data folder on tmpfs ran
1,255 jobs/s against 1,143 (median of 4 runs each, alternating).

Why it is safe: a command may leave a process outside its group that still holds its output (`setsid cmd &`);
reusing that file would mix its late output into another command's. The command gets a descriptor of its own
opening, for writing; the worker reads through a read-only one. A read lease (F_SETLEASE F_RDLCK) is granted only
while no one has the file open for writing, so a file comes back to the pool only when that lease is granted:
every process that could write to it has closed it. Otherwise (or where leases or /proc are not available) the
file is closed, as before, and the next command gets a new one.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

POOL_MAX = 64  # files kept per spool folder (a worker runs at most its concurrency at once)
_pools: dict[str, list[int]] = {}
_owner = os.getpid()  # a forked child must not share its parent's files: it starts a pool of its own
_no_tmpfile: set[str] = set()  # spool dirs whose filesystem refuses O_TMPFILE


def take(spool: str) -> tuple[int, int]:
    """(reader, writer) for a command's output in `spool`: the worker reads through `reader`, the command writes
    through `writer` (the caller closes it once the command started). writer is -1 when the file cannot be
    reopened (no /proc): then `reader` is read-write, the command's too, and is not reused (see give_back)."""
    pool = _pool(spool)
    while pool:
        reader = pool.pop()
        try:
            return reader, _reopen(reader, os.O_WRONLY)
        except OSError:
            os.close(reader)
    fd = _new_file(spool)
    try:
        reader = _reopen(fd, os.O_RDONLY)
    except OSError:
        return fd, -1
    return reader, fd


def give_back(reader: int, spool: str, reusable: bool) -> None:
    """Done with `reader`: kept for a later command when `reusable` (it came with a writer) and nobody can write
    to its file any more (emptied first), else closed."""
    pool = _pool(spool)
    if reusable and len(pool) < POOL_MAX and _unwritten(reader) and _emptied(reader):
        pool.append(reader)
    else:
        os.close(reader)


def _pool(spool: str) -> list[int]:
    """This process's pool for `spool` (after a fork, the parent's descriptors are left to the parent)."""
    global _owner
    if _owner != os.getpid():
        _owner = os.getpid()
        _pools.clear()
    return _pools.setdefault(spool, [])


def open_in_dir(path: str, directory: str, flags: int, mode: int) -> int:
    """os.open, creating the directory on the first miss (so the common case costs one syscall)."""
    try:
        return os.open(path, flags, mode)
    except FileNotFoundError:
        os.makedirs(directory or ".", exist_ok=True)
        return os.open(path, flags, mode)


def _new_file(spool: str) -> int:
    """An unnamed read-write file in `spool` (or a named one, unlinked at once, where the filesystem has no
    O_TMPFILE)."""
    if spool not in _no_tmpfile:
        try:
            # An unnamed file: nothing to delete afterwards, nothing left behind if the worker is killed.
            return open_in_dir(spool, spool, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # no O_TMPFILE here
                raise
            _no_tmpfile.add(spool)
    path = os.path.join(spool, f"angora-{os.getpid()}-{time.monotonic_ns()}.out")
    fd = open_in_dir(path, spool, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.unlink(path)  # the open fds (ours, the child's) keep it readable
    return fd


def _reopen(fd: int, flags: int) -> int:
    """Another open file description of `fd`'s file (through /proc: the file has no name)."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def _unwritten(reader: int) -> bool:
    """True when no process has the file open for writing (a read lease is granted, and given back at once)."""
    try:
        fcntl.fcntl(reader, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(reader, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    except OSError:
        return False
    return True


def _emptied(reader: int) -> bool:
    """Truncate the file to nothing (a no-op when the command wrote nothing); False when it cannot be."""
    try:
        if os.fstat(reader).st_size == 0:
            return True
        writer = _reopen(reader, os.O_WRONLY)
        try:
            os.ftruncate(writer, 0)
        finally:
            os.close(writer)
    except OSError:
        return False
    return True
