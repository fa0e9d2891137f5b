"""Dyno lifecycle: on SIGTERM each role stops within Heroku's 30 s, and commands still running are handed back
and run elsewhere."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from angora_testkit import System, pid_alive, wait_for, write_config

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"
HEROKU_GRACE = 30  # seconds between SIGTERM and SIGKILL on a dyno

LONG_ONCE = """
- name: long
  triggers: [long]
  command: [sh, '{tmp}/long.sh']
"""
# Long the first time (its pid noted), quick the second.
LONG_SH = """\
if [ -e {tmp}/ran ]; then echo finished > {tmp}/done; exit 0; fi
touch {tmp}/ran
echo $$ > {tmp}/pid
exec sleep 60
"""


def procfile_line(role: str) -> str:
    """The command of one Procfile process type."""
    for line in PROCFILE.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == role:
            return command.strip()
    raise AssertionError(f"no {role}: line in the Procfile")


def test_sigterm_to_the_worker_and_its_command_hands_it_back(angora_env: dict[str, str], tmp_path: Path) -> None:
    # Heroku (and systemd's default KillMode) send SIGTERM to every process of the dyno at once, the commands too.
    (tmp_path / "long.sh").write_text(LONG_SH.replace("{tmp}", str(tmp_path)))
    s = System(angora_env, write_config(tmp_path / "config", LONG_ONCE.replace("{tmp}", str(tmp_path))), tmp_path)
    try:
        s.start("matcher")
        first = s.start("worker")
        run_id = s.send("long")
        command = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip(), 30,
                               what="the command to start"))
        first.send_signal(signal.SIGTERM)
        os.kill(command, signal.SIGTERM)
        assert first.wait(HEROKU_GRACE) == 0
        assert not pid_alive(command)
        s.start("worker")
        run = s.wait_run(run_id)
    finally:
        s.stop()
    assert run["status"] == "succeeded", s.logs()
    (e,) = s.executions(run_id)
    assert e["attempt"] == 1 and e["status"] == "succeeded"  # handed back unspent, not a failed attempt
    assert (tmp_path / "done").read_text() == "finished\n"


def group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of group `pgid` has exited within `timeout` seconds."""
    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        return bool(wait_for(gone, timeout, what=f"process group {pgid} to exit"))
    except AssertionError:
        return False


@pytest.mark.parametrize("role", ["matcher", "worker", "scheduler"])
def test_procfile_roles_stop_cleanly_on_sigterm(role: str, angora_env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", "- {name: a, triggers: [a], command: 'true'}\n")
    env = dict(angora_env, ANGORA_CONFIG=str(config),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    out = tmp_path / f"{role}.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(["sh", "-c", procfile_line(role)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(lambda: f"{role} " in out.read_text(), 30, what=f"the {role} to start")
        os.killpg(proc.pid, signal.SIGTERM)  # the shell and the role (a shell that got it too exits -15)
        proc.wait(HEROKU_GRACE)
        assert group_gone(proc.pid, HEROKU_GRACE), out.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in out.read_text()
