"""Spool files are reused only when nothing can write to them any more (real commands, real files)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from angora_rq.commands import runner, spoolfiles
from angora_rq.core.command import CommandSpec

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def run(argv: list[str], spool: Path) -> tuple[runner.Outcome, int]:
    """Run a command to its end: its outcome and the inode of its spool file."""
    cmd = runner.start(CommandSpec(argv=argv, env=ENV, spool_dir=str(spool)))
    inode = os.fstat(cmd._out).st_ino
    try:
        return cmd.wait(), inode
    finally:
        cmd.close()


def test_a_finished_commands_file_serves_the_next_emptied(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    first, ino1 = run(["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo FIRST"], spool)
    second, ino2 = run(["echo", "SECOND"], spool)
    assert first.tail.endswith("FIRST\n") and second.tail == "SECOND\n"
    assert ino2 == ino1  # the same file, truncated before it was handed over


def test_a_file_a_leftover_process_still_holds_is_never_reused(tmp_path: Path) -> None:
    """The command leaves a process outside its group (own session) that keeps its output open and writes later:
    that file is not handed to the next command, whose output stays its own."""
    spool = tmp_path / "spool"
    ready = tmp_path / "escaped"  # the leftover is in its own session: the group's end does not reach it
    script = (f"setsid sh -c 'touch {ready}; sleep 0.5; echo LATE' & "
              f"while [ ! -e {ready} ]; do sleep 0.01; done; echo FIRST")
    first, ino1 = run(["sh", "-c", script], spool)
    second, ino2 = run(["echo", "SECOND"], spool)
    assert ino2 != ino1
    time.sleep(1.0)  # the leftover has written by now: into its own file, in no pooled one
    third, _ = run(["sh", "-c", "sleep 0.2; echo THIRD"], spool)
    assert third.tail == "THIRD\n"
    assert first.tail == "FIRST\n" and second.tail == "SECOND\n"


def test_without_a_writer_of_its_own_the_file_is_not_kept(tmp_path: Path) -> None:
    """A reader that is the command's descriptor too (no /proc to reopen through) is closed, never pooled."""
    spool = str(tmp_path / "spool")
    fd = os.open(str(tmp_path), os.O_TMPFILE | os.O_RDWR, 0o600)
    before = len(spoolfiles._pools.get(spool, []))
    spoolfiles.give_back(fd, spool, reusable=False)
    assert len(spoolfiles._pools.get(spool, [])) == before
    try:
        os.fstat(fd)
        raise AssertionError("the descriptor was left open")
    except OSError:
        pass


# Under pytest-xdist the test process has threads of its own (execnet's); the child only calls os functions and
# spoolfiles.take, which takes no lock, so no lock another thread held at the fork can block it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_take_its_parents_files(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    _, ino1 = run(["true"], spool)  # its file is in this process's pool now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new file, not the parent's
        reader, writer = spoolfiles.take(str(spool))
        os.write(w, str(os.fstat(reader).st_ino).encode())
        os._exit(0)
    os.close(w)
    child_ino = int(os.read(r, 100))
    os.waitpid(pid, 0)
    os.close(r)
    assert child_ino != ino1
    _, ino2 = run(["true"], spool)
    assert ino2 == ino1  # the parent still has it
