"""The guardian on real processes: a SIGKILLed worker's commands are ended; a clean close ends nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from angora_rq.guardian import Guardian
from test_runner import eventually, gone

HELPER = textwrap.dedent("""
    import os, sys, time
    from angora_rq import runner
    from angora_rq.guardian import Guardian

    guardian = Guardian.start(grace=float(sys.argv[2]))
    cmd = runner.start(runner.CommandSpec(argv=sys.argv[3:], env=dict(os.environ), spool_dir=sys.argv[1]))
    guardian.track(cmd.pgid)
    if os.environ.get("CLOSE"):
        guardian.close()
    print(cmd.pid, guardian.pid, flush=True)
    time.sleep(1000)
""")


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids a test started; SIGKILLed at the end whatever happened."""
    started: list[int] = []
    yield started
    for pid in started:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def start_helper(tmp_path: Path, argv: list[str], grace: float = 0.5,
                 **env: str) -> tuple[subprocess.Popen[str], int, int]:
    """A worker-like process: starts a guardian and one command; returns it, the command's pid, the guardian's."""
    script = tmp_path / "helper.py"
    script.write_text(HELPER)
    helper = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(grace), *argv],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert helper.stdout is not None
    command_pid, guardian_pid = map(int, helper.stdout.readline().split())
    return helper, command_pid, guardian_pid


def test_sigkilled_worker_commands_are_ended(tmp_path: Path, pids: list[int]) -> None:
    helper, command, guardian = start_helper(tmp_path, ["sleep", "1000"])
    pids.append(command)
    assert not gone(command)
    helper.kill()
    helper.wait()
    assert eventually(lambda: gone(command))
    assert eventually(lambda: gone(guardian))


def test_command_ignoring_term_is_killed_after_grace(tmp_path: Path, pids: list[int]) -> None:
    helper, command, guardian = start_helper(tmp_path, ["sh", "-c", "trap '' TERM; sleep 1000"], grace=0.3)
    pids.append(command)
    helper.kill()
    helper.wait()
    assert eventually(lambda: gone(command))
    assert eventually(lambda: gone(guardian))


def test_clean_close_ends_nothing(tmp_path: Path, pids: list[int]) -> None:
    helper, command, guardian = start_helper(tmp_path, ["sleep", "1000"], CLOSE="1")
    pids.append(command)
    assert gone(guardian)  # close() waited for it
    helper.kill()
    helper.wait()
    assert not gone(command)


def test_guardian_ignores_sigint_and_stops_on_q(pids: list[int]) -> None:
    guardian = Guardian.start(grace=0.1)
    pids.append(guardian.pid)
    os.kill(guardian.pid, signal.SIGINT)
    guardian.track(999_999_999)  # a group that cannot exist: harmless
    guardian.untrack(999_999_999)
    assert guardian.proc.poll() is None
    guardian.close()
    assert guardian.proc.returncode == 0


def test_guardian_without_groups_exits_when_the_pipe_closes(pids: list[int]) -> None:
    guardian = Guardian.start(grace=0.1)
    pids.append(guardian.pid)
    os.close(guardian._fd)  # as if the worker died with nothing running
    guardian._fd = -1
    assert guardian.proc.wait(timeout=10) == 0
