"""The guardian on real processes: a SIGKILLed worker's commands are ended; a clean close ends nothing."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from angora_rq.commands import guardian as guardian_module
from angora_rq.core.errors import AngoraError
from angora_rq.commands.guardian import FIRST_SLOTS, SLOT, Guardian
from angora_rq.commands.signals import group_members
from angora_testkit import ESCAPERS, escaping_script, kill_sleepers, new_tag, sleepers
from test_runner import eventually, gone

# A worker-like owner: starts a guardian and commands the way the worker does (runner.start, own session each),
# tracks some (with the guardian's marker in their environment; the untracked ones stand for processes that are
# not the worker's), prints {"guardian": pid, "tracked": [pgid...], "untracked": [pgid...]}, then sleeps.
HELPER = textwrap.dedent("""
    import json, os, sys, time
    from angora_rq.commands import runner
    from angora_rq.commands.guardian import Guardian
    from angora_rq.core.command import CommandSpec

    spool, grace, tracked, untracked = sys.argv[1], float(sys.argv[2]), *json.loads(sys.argv[3])
    guardian = Guardian.start(grace=grace)
    for i in range(int(os.environ.get("FILLER", "0"))):
        guardian.track(4_200_000 + i)  # above Linux's PID_MAX_LIMIT: groups that cannot exist, filling slots
    def start(argv, marked):  # tracked ones with the guardian's marker in their environment, as the worker does
        env = dict(os.environ, **(guardian.environment() if marked else {}))
        return runner.start(CommandSpec(argv=argv, env=env, spool_dir=spool)).pgid
    out = {"guardian": guardian.pid, "tracked": [], "untracked": []}
    for argv in tracked:
        out["tracked"].append(start(argv, True))
        guardian.track(out["tracked"][-1])
    guardian.flush()
    for argv in untracked:
        out["untracked"].append(start(argv, False))
        if os.environ.get("UNTRACK"):  # tracked, then forgotten: as after a reap
            guardian.track(out["untracked"][-1])
            guardian.untrack(out["untracked"][-1])
    if os.environ.get("CLOSE"):
        guardian.close()
    print(json.dumps(out), flush=True)
    time.sleep(1000)
""")

SLEEPERS = ["sh", "-c", "sleep 1000 & wait"]  # a shell and its child (the owner's grandchild): one group
STUBBORN = ["sh", "-c", "trap '' TERM; sleep 1000 & wait"]  # the same, both ignoring SIGTERM


class Started:
    """Owner processes and process groups a test started."""

    def __init__(self) -> None:
        self.owners: list[subprocess.Popen[str]] = []
        self.groups: list[int] = []


@pytest.fixture
def started() -> Iterator[Started]:
    """What a test started; SIGKILLed at the end whatever happened."""
    s = Started()
    yield s
    for proc in s.owners:
        proc.kill()
        proc.wait()
    for pgid in s.groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


class Owner:
    """The helper process, what it started, and every live member of each command group."""

    def __init__(self, tmp_path: Path, started: Started, tracked: list[list[str]], untracked: list[list[str]],
                 grace: float, **env: str) -> None:
        script = tmp_path / "helper.py"
        script.write_text(HELPER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(grace), json.dumps([tracked, untracked])],
            stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
        started.owners.append(self.proc)
        assert self.proc.stdout is not None
        out = json.loads(self.proc.stdout.readline())
        self.guardian: int = out["guardian"]
        self.tracked: list[int] = out["tracked"]
        self.untracked: list[int] = out["untracked"]
        started.groups.extend([self.guardian, *self.tracked, *self.untracked])
        # Each command's `sleep &` is a grandchild of the owner in the command's group: wait until all are up.
        assert eventually(lambda: all(len(group_members(g)) >= 2 for g in self.tracked + self.untracked))
        self.members = {g: group_members(g) for g in self.tracked + self.untracked}

    def sigkill(self) -> None:
        """Kill the owner as a worker may be killed."""
        self.proc.kill()
        self.proc.wait()

    def all_gone(self, groups: list[int]) -> bool:
        return all(gone(pid) for g in groups for pid in self.members[g])

    def none_gone(self, groups: list[int]) -> bool:
        return not any(gone(pid) for g in groups for pid in self.members[g])


def test_sigkilled_owner_commands_and_their_children_are_ended(tmp_path: Path, started: Started) -> None:
    grace = 0.5
    # The filler puts the real groups past the table's first page: it grew while the owner ran.
    owner = Owner(tmp_path, started, [SLEEPERS, SLEEPERS], [], grace, FILLER=str(FIRST_SLOTS + 5))
    assert owner.none_gone(owner.tracked)
    owner.sigkill()
    assert eventually(lambda: owner.all_gone(owner.tracked), within=grace + 10)
    assert eventually(lambda: gone(owner.guardian), within=grace + 10)


def test_groups_ignoring_sigterm_are_killed_after_the_grace(tmp_path: Path, started: Started) -> None:
    grace = 3.0
    owner = Owner(tmp_path, started, [SLEEPERS, STUBBORN], [], grace)
    polite, stubborn = owner.tracked
    owner.sigkill()
    assert eventually(lambda: owner.all_gone([polite]), within=grace + 10)  # SIGTERM has been sent
    # ... and SIGKILL waits for the grace: a third of it at least, whatever the order the kernel works in.
    assert not eventually(lambda: not owner.none_gone([stubborn]), within=grace / 3)
    assert eventually(lambda: owner.all_gone([stubborn]), within=grace + 10)
    assert eventually(lambda: gone(owner.guardian), within=grace + 10)


def test_processes_that_left_their_group_are_ended_too(tmp_path: Path, started: Started) -> None:
    """setsid children, double-forked daemons, SIGTERM-ignoring ones: found by the marker in their environment."""
    tag = new_tag()
    owner = Owner(tmp_path, started, [["sh", "-c", escaping_script(tag)]], [], 0.5)
    try:
        assert eventually(lambda: set(sleepers(tag)) == ESCAPERS)
        owner.sigkill()
        assert eventually(lambda: not sleepers(tag), within=15)
        assert eventually(lambda: gone(owner.guardian))
    finally:
        kill_sleepers(tag)


def test_a_guardian_without_grep_z_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, started: Started,
                                           caplog: pytest.LogCaptureFixture) -> None:
    limited = tmp_path / "limited"
    limited.write_text("#!/bin/sh\necho 'ready without-marker'\nexec cat >/dev/null\n")
    limited.chmod(0o755)
    monkeypatch.setattr(guardian_module, "SHELL", str(limited))
    with caplog.at_level(logging.WARNING, logger="angora_rq.commands.guardian"):
        guardian = Guardian.start(grace=0.1)
    started.groups.append(guardian.pid)
    assert "no grep -z" in caplog.text
    guardian.close()


def test_untracked_groups_are_left_alone(tmp_path: Path, started: Started) -> None:
    owner = Owner(tmp_path, started, [SLEEPERS], [SLEEPERS], 0.2)
    owner_untracking = Owner(tmp_path, started, [SLEEPERS], [SLEEPERS], 0.2, UNTRACK="1")
    owners = (owner, owner_untracking)
    for o in owners:
        o.sigkill()
    assert eventually(lambda: all(o.all_gone(o.tracked) and gone(o.guardian) for o in owners))
    for o in owners:
        assert o.none_gone(o.untracked)


def test_clean_close_ends_nothing(tmp_path: Path, started: Started) -> None:
    owner = Owner(tmp_path, started, [SLEEPERS], [], 0.2, CLOSE="1")
    assert gone(owner.guardian)  # close() waited for it
    owner.sigkill()
    assert owner.none_gone(owner.tracked)


def test_guardian_ignores_signals_and_still_does_its_job(tmp_path: Path, started: Started) -> None:
    owner = Owner(tmp_path, started, [SLEEPERS], [], 0.2)
    assert _session(owner.guardian) == owner.guardian  # its own session: the owner's group signals miss it
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.killpg(owner.guardian, sig)  # as a terminal or a supervisor would signal a group
    os.kill(owner.guardian, signal.SIGPIPE)
    # Had any signal ended the guardian, or made it end the groups, one of these fails.
    assert owner.none_gone(owner.tracked)
    owner.sigkill()
    assert eventually(lambda: owner.all_gone(owner.tracked))
    assert eventually(lambda: gone(owner.guardian))


def test_close_exits_with_nothing_left(started: Started) -> None:
    guardian = Guardian.start(grace=0.1)
    started.groups.append(guardian.pid)
    guardian.track(4_200_000)  # a group that cannot exist: harmless
    guardian.untrack(4_200_000)
    guardian.close()
    assert guardian.proc.returncode == 0
    guardian.close()  # twice is fine


def test_guardian_without_groups_exits_when_the_pipe_closes(started: Started) -> None:
    guardian = Guardian.start(grace=0.1)
    started.groups.append(guardian.pid)
    os.close(guardian._pipe)  # as if the worker died with nothing running
    guardian._pipe = -1
    assert guardian.proc.wait(timeout=10) == 0


def test_without_memfd_an_unlinked_file_does(monkeypatch: pytest.MonkeyPatch, started: Started) -> None:
    def no_memfd(name: str, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(guardian_module.os, "memfd_create", no_memfd)
    guardian = Guardian.start(grace=0.1)
    started.groups.append(guardian.pid)
    sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    started.groups.append(sleeper.pid)
    guardian.track(sleeper.pid)
    os.close(guardian._pipe)  # as if the worker died
    guardian._pipe = -1
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    assert guardian.proc.wait(timeout=10) == 0


def test_a_dead_guardian_is_reported(started: Started, caplog: pytest.LogCaptureFixture) -> None:
    guardian = Guardian.start(grace=0.1)
    started.groups.append(guardian.pid)
    os.kill(guardian.pid, signal.SIGKILL)
    guardian.proc.wait()
    with caplog.at_level(logging.ERROR, logger="angora_rq.commands.guardian"):
        guardian.flush()
    assert "is gone" in caplog.text
    guardian.close()


@pytest.mark.parametrize("shell", ["/nonexistent/sh", "/bin/false"])
def test_a_guardian_that_cannot_start_is_an_error(monkeypatch: pytest.MonkeyPatch, shell: str) -> None:
    monkeypatch.setattr(guardian_module, "SHELL", shell)
    with pytest.raises(AngoraError, match="guardian"):
        Guardian.start()


def test_a_silent_guardian_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mute = tmp_path / "mute"
    mute.write_text("#!/bin/sh\nexec sleep 1000\n")
    mute.chmod(0o755)
    monkeypatch.setattr(guardian_module, "SHELL", str(mute))
    monkeypatch.setattr(guardian_module, "START_TIMEOUT", 0.3)
    with pytest.raises(AngoraError, match="no answer"):
        Guardian.start()


def test_table_lines_name_exactly_the_tracked_groups(started: Started) -> None:
    guardian = Guardian.start(grace=0.1)
    started.groups.append(guardian.pid)
    groups = list(range(4_200_000, 4_200_000 + 3 * FIRST_SLOTS))  # past PID_MAX_LIMIT: no such groups; grows twice
    for g in groups:
        guardian.track(g)
    for g in groups[::3]:
        guardian.untrack(g)
    guardian.track(groups[0])  # back into a freed line
    guardian.track(groups[1])  # already there: no second line
    data = os.pread(guardian._table, 1 << 20, 0)
    assert b"\0" not in data and len(data) % SLOT == 0
    tracked = [int(line[:-1]) for line in data.decode().splitlines() if line.endswith("+")]
    assert sorted(tracked) == sorted({groups[0], *(g for i, g in enumerate(groups) if i % 3)})
    for bad in (0, 1, -5):  # -0 is the guardian's own group, -1 every process
        with pytest.raises(ValueError):
            guardian.track(bad)
    guardian.close()
    with pytest.raises(AngoraError):
        guardian.track(groups[0])  # after close nothing can be guarded: say so


def _session(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[3])
